//! Group commit: many concurrent callers each hand one item to a single task, which
//! handles whatever is queued at that moment in one go (one transaction, one RPC) and
//! tells each caller its own outcome. At low load a batch is one item and nothing waits;
//! under load one commit serves many callers — one WAL flush or one round trip per batch
//! instead of per item.

use futures::{StreamExt, stream::FuturesUnordered};
use std::future::Future;
use tokio::sync::{mpsc, oneshot};

/// Items waiting, per unit of the batch size, before callers wait for room.
const QUEUED_BATCHES: usize = 16;

/// The callers' side of a group-commit task; cheap to clone.
pub struct GroupCommit<I, O> {
    queue: mpsc::Sender<(I, oneshot::Sender<O>)>,
}

impl<I, O> Clone for GroupCommit<I, O> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<I, O> std::fmt::Debug for GroupCommit<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field(
                "queued",
                &(self.queue.max_capacity() - self.queue.capacity()),
            )
            .finish()
    }
}

impl<I: Send + 'static, O: Send + 'static> GroupCommit<I, O> {
    /// Starts the task. `commit` gets each batch (1 to `max_batch` items, in arrival
    /// order) and returns one outcome per item, in the same order. One batch at a time:
    /// the next one holds what arrived during the commit (a transaction, whose commits
    /// are serial anyway). The task ends when the last `GroupCommit` is dropped.
    pub fn start<F, Fut>(max_batch: usize, commit: F) -> Self
    where
        F: FnMut(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        Self::pipelined(max_batch, 1, commit)
    }

    /// Like [`start`](Self::start), with up to `in_flight` batches committing at once:
    /// for a commit that is a round trip (an RPC), whose latency would otherwise cap the
    /// throughput at one batch per round trip. A batch leaves as soon as a slot is free,
    /// so at low load nothing waits; with every slot busy, items gather for the next.
    pub fn pipelined<F, Fut>(max_batch: usize, in_flight: usize, mut commit: F) -> Self
    where
        F: FnMut(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        let max_batch = max_batch.max(1);
        let max_in_flight = in_flight.max(1);
        let (queue, mut waiting) = mpsc::channel(max_batch * QUEUED_BATCHES);
        tokio::spawn(async move {
            let mut batch: Vec<(I, oneshot::Sender<O>)> = Vec::with_capacity(max_batch);
            let mut committing = FuturesUnordered::new();
            loop {
                tokio::select! {
                    // Finished batches first: their callers wait, and they free a slot.
                    biased;
                    Some((replies, outcomes)) = committing.next(), if !committing.is_empty() => {
                        answer(replies, outcomes);
                    }
                    received = waiting.recv_many(&mut batch, max_batch),
                        if committing.len() < max_in_flight =>
                    {
                        if received == 0 {
                            break;
                        }
                        gather(&mut waiting, &mut batch, max_batch).await;
                        // A caller that stopped waiting (its deadline passed in the
                        // queue) was told it failed: leave its item out rather than act
                        // on it unseen.
                        batch.retain(|(_, reply)| !reply.is_closed());
                        if batch.is_empty() {
                            continue;
                        }
                        let (items, replies): (Vec<I>, Vec<_>) = batch.drain(..).unzip();
                        let outcomes = commit(items);
                        committing.push(async move { (replies, outcomes.await) });
                    }
                }
            }
            // Every caller is gone; still finish what was handed over.
            while let Some((replies, outcomes)) = committing.next().await {
                answer(replies, outcomes);
            }
        });
        Self { queue }
    }

    /// Hands `item` over and waits for its outcome; `None` when the task has stopped (or
    /// its commit returned too few outcomes).
    pub async fn submit(&self, item: I) -> Option<O> {
        let (reply, outcome) = oneshot::channel();
        self.queue.send((item, reply)).await.ok()?;
        outcome.await.ok()
    }
}

/// Tops `batch` up with what its first item's fellow callers hand in right after it.
async fn gather<T>(waiting: &mut mpsc::Receiver<T>, batch: &mut Vec<T>, max_batch: usize) {
    if batch.len() < max_batch {
        // The first item woke this task at once (tokio runs a task woken by another one
        // next), while the callers it came with — the other events of one delivery, the
        // sockets of one burst — are still queued to run. Let them hand their items in
        // first: one batch then serves them all, for one yield's delay.
        tokio::task::yield_now().await;
        while batch.len() < max_batch {
            let Ok(item) = waiting.try_recv() else { break };
            batch.push(item);
        }
    }
}

/// Tells each caller of a committed batch its own outcome.
fn answer<O>(replies: Vec<oneshot::Sender<O>>, outcomes: Vec<O>) {
    debug_assert_eq!(outcomes.len(), replies.len(), "one outcome per item");
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        // A caller that gave up during the commit no longer needs its answer.
        let _ = reply.send(outcome);
    }
}

/// The answers of a batch of `items` items stored as one (`all`: one answer per item, in
/// order), or, when the batch fails as a whole (one item can sink it), of each item stored
/// alone (`one(index)`), so one item's failure is its own and every caller gets an answer
/// of its own. A batch of one item that failed is answered with that failure: alone, it
/// is the same commit. `what` names the items in the warning.
pub async fn each_alone_on_failure<T, E, All, One>(
    items: usize,
    what: &str,
    all: impl FnOnce() -> All,
    one: impl Fn(usize) -> One,
) -> Vec<Result<T, E>>
where
    E: std::fmt::Display,
    All: Future<Output = Result<Vec<T>, E>>,
    One: Future<Output = Result<T, E>>,
{
    let error = match all().await {
        Ok(answers) => return answers.into_iter().map(Ok).collect(),
        Err(error) if items == 1 => return vec![Err(error)],
        Err(error) => error,
    };
    tracing::warn!(%error, size = items, "{what} batch failed; storing one by one");
    let mut answers = Vec::with_capacity(items);
    for index in 0..items {
        answers.push(one(index).await);
    }
    answers
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };

    /// Stores `items` as one batch (failing as a whole when any is odd) or one alone
    /// (failing when it is odd), counting the commits.
    async fn stored(items: &[u32], commits: &AtomicUsize) -> Vec<Result<u32, String>> {
        each_alone_on_failure(
            items.len(),
            "number",
            || async {
                commits.fetch_add(1, Ordering::SeqCst);
                match items.iter().find(|item| *item % 2 == 1) {
                    Some(odd) => Err(format!("{odd} is odd")),
                    None => Ok(items.to_vec()),
                }
            },
            |index| async move {
                commits.fetch_add(1, Ordering::SeqCst);
                let item = items[index];
                if item % 2 == 1 {
                    Err(format!("{item} is odd"))
                } else {
                    Ok(item)
                }
            },
        )
        .await
    }

    #[tokio::test]
    async fn a_failed_batch_is_stored_item_by_item_and_each_gets_its_own_answer() {
        let commits = AtomicUsize::new(0);
        assert_eq!(stored(&[2, 4], &commits).await, [Ok(2), Ok(4)]);
        assert_eq!(
            commits.swap(0, Ordering::SeqCst),
            1,
            "one commit for the batch"
        );

        let answers = stored(&[2, 3, 4], &commits).await;
        assert_eq!(answers, [Ok(2), Err("3 is odd".to_owned()), Ok(4)]);
        assert_eq!(
            commits.swap(0, Ordering::SeqCst),
            4,
            "the batch, then each alone"
        );

        // Alone, a batch of one is the same commit: not made twice.
        assert_eq!(stored(&[3], &commits).await, [Err("3 is odd".to_owned())]);
        assert_eq!(commits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn each_caller_gets_its_own_outcome_and_concurrent_callers_share_a_batch() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&batches);
        let doubler = GroupCommit::start(64, move |items: Vec<u32>| {
            counted.fetch_add(1, Ordering::Relaxed);
            async move {
                // Slow enough that the other callers queue up behind the first batch.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                items.into_iter().map(|n| n * 2).collect()
            }
        });
        let callers: Vec<_> = (0..50)
            .map(|n| {
                let doubler = doubler.clone();
                tokio::spawn(async move { (n, doubler.submit(n).await) })
            })
            .collect();
        for caller in callers {
            let (n, doubled) = caller.await.unwrap();
            assert_eq!(doubled, Some(n * 2));
        }
        assert!(
            batches.load(Ordering::Relaxed) < 50,
            "concurrent callers share batches"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn callers_started_together_share_one_batch() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let commit = GroupCommit::start(64, move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.len());
            async move { items }
        });
        // Spawned from one task onto one worker: the callers are queued to run together,
        // as the events of one delivery are. The first one's item wakes the commit task
        // first (tokio runs a task woken by another next); it must still take all 32.
        let parent = tokio::spawn(async move {
            let callers: Vec<_> = (0..32)
                .map(|n| {
                    let commit = commit.clone();
                    tokio::spawn(async move { commit.submit(n).await })
                })
                .collect();
            for (n, caller) in (0_u32..).zip(callers) {
                assert_eq!(caller.await.unwrap(), Some(n));
            }
        });
        parent.await.unwrap();
        assert_eq!(*sizes.lock().unwrap(), vec![32]);
    }

    #[tokio::test]
    async fn items_whose_callers_stopped_waiting_are_left_out() {
        let committed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&committed);
        let (release, released) = tokio::sync::watch::channel(false);
        let commit = GroupCommit::start(64, move |items: Vec<u32>| {
            seen.lock().unwrap().extend(items.iter().copied());
            let mut released = released.clone();
            async move {
                // The first batch holds the task while the next callers queue up.
                let _ = released.wait_for(|go| *go).await;
                items
            }
        });
        let first = tokio::spawn({
            let commit = commit.clone();
            async move { commit.submit(1).await }
        });
        while committed.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // Queued behind the first batch: one caller gives up, one keeps waiting.
        let gave_up = tokio::time::timeout(Duration::from_millis(10), commit.submit(2)).await;
        assert!(gave_up.is_err(), "the commit task is still busy");
        let waiting = tokio::spawn({
            let commit = commit.clone();
            async move { commit.submit(3).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        release.send(true).unwrap();
        assert_eq!(first.await.unwrap(), Some(1));
        assert_eq!(waiting.await.unwrap(), Some(3));
        assert_eq!(*committed.lock().unwrap(), vec![1, 3]);
    }

    #[tokio::test]
    async fn a_pipelined_commit_keeps_several_batches_in_flight_and_no_more() {
        let (current, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        // Each batch waits until three are committing at once: only a commit that keeps
        // three in flight gets through.
        let barrier = Arc::new(tokio::sync::Barrier::new(3));
        let commit = GroupCommit::pipelined(1, 3, {
            let (current, most) = (Arc::clone(&current), Arc::clone(&most));
            move |items: Vec<u32>| {
                let (current, most, barrier) = (
                    Arc::clone(&current),
                    Arc::clone(&most),
                    Arc::clone(&barrier),
                );
                async move {
                    most.fetch_max(current.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    barrier.wait().await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    current.fetch_sub(1, Ordering::SeqCst);
                    items
                }
            }
        });
        let callers: Vec<_> = (0..12)
            .map(|n| {
                let commit = commit.clone();
                tokio::spawn(async move { commit.submit(n).await })
            })
            .collect();
        let answered = tokio::time::timeout(Duration::from_secs(5), async {
            for (n, caller) in (0_u32..).zip(callers) {
                assert_eq!(caller.await.unwrap(), Some(n));
            }
        })
        .await;
        assert!(answered.is_ok(), "three batches commit at once");
        assert_eq!(
            most.load(Ordering::SeqCst),
            3,
            "never more than three in flight"
        );
    }

    #[tokio::test]
    async fn batches_never_exceed_their_limit() {
        let largest = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&largest);
        let commit = GroupCommit::start(4, move |items: Vec<u32>| {
            seen.fetch_max(items.len(), Ordering::Relaxed);
            async move { items }
        });
        let callers: Vec<_> = (0..40)
            .map(|n| {
                let commit = commit.clone();
                tokio::spawn(async move { commit.submit(n).await })
            })
            .collect();
        for caller in callers {
            assert!(caller.await.unwrap().is_some());
        }
        assert!(largest.load(Ordering::Relaxed) <= 4);
    }
}
