//! One socket's outgoing frames and its close request, in one small allocation.
//!
//! A broker holds tens of thousands of mostly idle sockets, so what an idle socket costs is
//! what limits it. A tokio mpsc channel reserves a cache-padded channel and a first block of
//! 32 slots before the first frame (about 1 KiB), and a cancellation token for the close
//! request is a tree node of its own. An outgoing queue is one mutex around a deque that
//! allocates only while frames wait — the socket takes all of them at once, so an idle
//! socket holds no queue storage — the close code and the socket task's waker: under 100
//! bytes idle.
//!
//! Producers (the hub, fanning an event out) never wait: a full queue asks its socket to
//! close as too slow instead of growing.

use super::hub::{Frame, close};
use std::{
    collections::VecDeque,
    future::poll_fn,
    sync::{Mutex, MutexGuard},
    task::{Poll, Waker},
};

/// What a socket's task takes from its outgoing queue.
#[derive(Debug)]
pub enum Outgoing {
    /// Every frame queued so far, oldest first (never empty).
    Frames(VecDeque<Frame>),
    /// The socket has been asked to close, with this code; queued frames are dropped.
    Close(u16),
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue was full: the socket is now asked to close as too slow.
    Full,
    /// The socket was already asked to close.
    Closing,
}

#[derive(Debug, Default)]
struct Inner {
    frames: VecDeque<Frame>,
    /// The close code asked for; 0 while open.
    close: u16,
    /// The socket task, parked until a frame or a close request arrives.
    waker: Option<Waker>,
}

/// A socket's queue of outgoing frames, bounded, with its close request.
#[derive(Debug)]
pub struct OutgoingQueue {
    limit: usize,
    inner: Mutex<Inner>,
}

impl OutgoingQueue {
    /// A queue holding at most `limit` frames that wait.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("no code panics while holding an outgoing queue's lock")
    }

    /// Wakes the socket's task, if it waits, after letting go of the lock.
    fn wake(mut inner: MutexGuard<'_, Inner>) {
        let waker = inner.waker.take();
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Queues `frame`, or refuses it; a full queue asks its socket to close as too slow.
    pub fn offer(&self, frame: Frame) -> Result<(), Refused> {
        let mut inner = self.lock();
        if inner.close != 0 {
            return Err(Refused::Closing);
        }
        let outcome = if inner.frames.len() >= self.limit {
            inner.close = close::TOO_SLOW;
            Err(Refused::Full)
        } else {
            inner.frames.push_back(frame);
            Ok(())
        };
        Self::wake(inner);
        outcome
    }

    /// Asks the socket to close with `code` (the first code asked for wins).
    pub fn close(&self, code: u16) {
        let mut inner = self.lock();
        if inner.close == 0 {
            inner.close = code;
        }
        Self::wake(inner);
    }

    /// The close code asked for, if any.
    pub fn close_code(&self) -> Option<u16> {
        match self.lock().close {
            0 => None,
            code => Some(code),
        }
    }

    /// The frames queued so far, without waiting; none while a close request is pending
    /// (the socket's next [`OutgoingQueue::next`] then sees it).
    pub fn take_queued(&self) -> Option<VecDeque<Frame>> {
        let mut inner = self.lock();
        if inner.close != 0 || inner.frames.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut inner.frames))
    }

    /// Waits for frames or a close request; a close request comes first.
    pub async fn next(&self) -> Outgoing {
        poll_fn(|cx| {
            let mut inner = self.lock();
            if inner.close != 0 {
                Poll::Ready(Outgoing::Close(inner.close))
            } else if !inner.frames.is_empty() {
                Poll::Ready(Outgoing::Frames(std::mem::take(&mut inner.frames)))
            } else {
                match &mut inner.waker {
                    Some(waker) => waker.clone_from(cx.waker()),
                    None => inner.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::ws::Utf8Bytes;
    use std::sync::Arc;

    fn frame(text: &'static str) -> Frame {
        Arc::new(Utf8Bytes::from_static(text))
    }

    fn texts(outgoing: Outgoing) -> Vec<String> {
        match outgoing {
            Outgoing::Frames(frames) => frames.iter().map(|f| f.as_str().to_owned()).collect(),
            Outgoing::Close(code) => panic!("expected frames, got close {code}"),
        }
    }

    #[tokio::test]
    async fn frames_queued_together_are_taken_together_in_order() {
        let outgoing = OutgoingQueue::new(8);
        outgoing.offer(frame("a")).unwrap();
        outgoing.offer(frame("b")).unwrap();
        assert_eq!(texts(outgoing.next().await), ["a", "b"]);
        outgoing.offer(frame("c")).unwrap();
        assert_eq!(texts(outgoing.next().await), ["c"]);
    }

    #[test]
    fn frames_can_be_taken_without_waiting_unless_closing() {
        let outgoing = OutgoingQueue::new(8);
        assert!(outgoing.take_queued().is_none());
        outgoing.offer(frame("a")).unwrap();
        let taken = outgoing.take_queued().expect("a queued frame");
        assert_eq!(taken.len(), 1);
        assert!(outgoing.take_queued().is_none(), "taken once");
        outgoing.offer(frame("b")).unwrap();
        outgoing.close(close::SESSION_ENDED);
        assert!(
            outgoing.take_queued().is_none(),
            "the close request comes first"
        );
    }

    #[tokio::test]
    async fn a_waiting_socket_is_woken_by_a_frame() {
        let outgoing = Arc::new(OutgoingQueue::new(8));
        let waiting = tokio::spawn({
            let outgoing = Arc::clone(&outgoing);
            async move { texts(outgoing.next().await) }
        });
        tokio::task::yield_now().await;
        outgoing.offer(frame("late")).unwrap();
        assert_eq!(waiting.await.unwrap(), ["late"]);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_asks_to_close_as_too_slow() {
        let outgoing = OutgoingQueue::new(2);
        outgoing.offer(frame("1")).unwrap();
        outgoing.offer(frame("2")).unwrap();
        assert_eq!(outgoing.close_code(), None);
        assert_eq!(outgoing.offer(frame("3")), Err(Refused::Full));
        assert_eq!(outgoing.close_code(), Some(close::TOO_SLOW));
        assert_eq!(outgoing.offer(frame("4")), Err(Refused::Closing));
        assert!(matches!(
            outgoing.next().await,
            Outgoing::Close(close::TOO_SLOW)
        ));
    }

    #[tokio::test]
    async fn a_close_request_wins_over_queued_frames_and_keeps_its_first_code() {
        let outgoing = OutgoingQueue::new(8);
        outgoing.offer(frame("dropped")).unwrap();
        outgoing.close(close::SESSION_ENDED);
        outgoing.close(close::GOING_AWAY);
        assert!(matches!(
            outgoing.next().await,
            Outgoing::Close(close::SESSION_ENDED)
        ));
    }
}
