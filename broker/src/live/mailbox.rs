//! One socket's outgoing frames and its close request, in one small allocation.
//!
//! A broker holds tens of thousands of mostly idle sockets, so what an idle socket costs is
//! what limits it. A tokio mpsc channel reserves a cache-padded channel and a first block of
//! 32 slots before the first frame (about 1 KiB), and a cancellation token for the close
//! request is a tree node of its own. A mailbox is one mutex around a queue that allocates
//! only while frames wait — the socket takes all of them at once, so an idle socket holds
//! no queue storage — the close code and the socket task's waker: under 100 bytes idle.
//!
//! Producers (the hub, fanning an event out) never wait: a full mailbox asks its socket to
//! close as too slow instead of growing.

use super::hub::{Frame, close};
use std::{
    collections::VecDeque,
    future::poll_fn,
    sync::{Mutex, MutexGuard},
    task::{Poll, Waker},
};

/// What a socket's task takes from its mailbox.
#[derive(Debug)]
pub enum Delivery {
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
pub struct Mailbox {
    limit: usize,
    inner: Mutex<Inner>,
}

impl Mailbox {
    /// A mailbox holding at most `limit` frames that wait.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("no code panics while holding a mailbox lock")
    }

    /// Wakes the socket's task, if it waits, after letting go of the lock.
    fn wake(mut inner: MutexGuard<'_, Inner>) {
        let waker = inner.waker.take();
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Queues `frame`, or refuses it; a full mailbox asks its socket to close as too slow.
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
    /// (the socket's next [`Mailbox::next`] then sees it).
    pub fn take_queued(&self) -> Option<VecDeque<Frame>> {
        let mut inner = self.lock();
        if inner.close != 0 || inner.frames.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut inner.frames))
    }

    /// Waits for frames or a close request; a close request comes first.
    pub async fn next(&self) -> Delivery {
        poll_fn(|cx| {
            let mut inner = self.lock();
            if inner.close != 0 {
                Poll::Ready(Delivery::Close(inner.close))
            } else if !inner.frames.is_empty() {
                Poll::Ready(Delivery::Frames(std::mem::take(&mut inner.frames)))
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

    fn texts(delivery: Delivery) -> Vec<String> {
        match delivery {
            Delivery::Frames(frames) => frames.iter().map(|f| f.as_str().to_owned()).collect(),
            Delivery::Close(code) => panic!("expected frames, got close {code}"),
        }
    }

    #[tokio::test]
    async fn frames_queued_together_are_taken_together_in_order() {
        let mailbox = Mailbox::new(8);
        mailbox.offer(frame("a")).unwrap();
        mailbox.offer(frame("b")).unwrap();
        assert_eq!(texts(mailbox.next().await), ["a", "b"]);
        mailbox.offer(frame("c")).unwrap();
        assert_eq!(texts(mailbox.next().await), ["c"]);
    }

    #[test]
    fn frames_can_be_taken_without_waiting_unless_closing() {
        let mailbox = Mailbox::new(8);
        assert!(mailbox.take_queued().is_none());
        mailbox.offer(frame("a")).unwrap();
        let taken = mailbox.take_queued().expect("a queued frame");
        assert_eq!(taken.len(), 1);
        assert!(mailbox.take_queued().is_none(), "taken once");
        mailbox.offer(frame("b")).unwrap();
        mailbox.close(close::SESSION_ENDED);
        assert!(
            mailbox.take_queued().is_none(),
            "the close request comes first"
        );
    }

    #[tokio::test]
    async fn a_waiting_socket_is_woken_by_a_frame() {
        let mailbox = Arc::new(Mailbox::new(8));
        let waiting = tokio::spawn({
            let mailbox = Arc::clone(&mailbox);
            async move { texts(mailbox.next().await) }
        });
        tokio::task::yield_now().await;
        mailbox.offer(frame("late")).unwrap();
        assert_eq!(waiting.await.unwrap(), ["late"]);
    }

    #[tokio::test]
    async fn a_full_mailbox_refuses_and_asks_to_close_as_too_slow() {
        let mailbox = Mailbox::new(2);
        mailbox.offer(frame("1")).unwrap();
        mailbox.offer(frame("2")).unwrap();
        assert_eq!(mailbox.close_code(), None);
        assert_eq!(mailbox.offer(frame("3")), Err(Refused::Full));
        assert_eq!(mailbox.close_code(), Some(close::TOO_SLOW));
        assert_eq!(mailbox.offer(frame("4")), Err(Refused::Closing));
        assert!(matches!(
            mailbox.next().await,
            Delivery::Close(close::TOO_SLOW)
        ));
    }

    #[tokio::test]
    async fn a_close_request_wins_over_queued_frames_and_keeps_its_first_code() {
        let mailbox = Mailbox::new(8);
        mailbox.offer(frame("dropped")).unwrap();
        mailbox.close(close::SESSION_ENDED);
        mailbox.close(close::GOING_AWAY);
        assert!(matches!(
            mailbox.next().await,
            Delivery::Close(close::SESSION_ENDED)
        ));
    }
}
