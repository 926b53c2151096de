//! Batched leadership checks for linearizable reads (ReadIndex batching).
//!
//! Why: openraft 0.9's `ensure_linearizable` runs one heartbeat round to every follower per
//! call, so 64 concurrent readers cost 64 rounds. Measured at 64 clients on loopback
//! (benches/RESULTS.md): 2 527 linearizable reads/s at p50 25 ms, a quarter of the write
//! rate. Here one task confirms leadership once for every read that was waiting when the
//! check began, then waits once for the state machine to apply up to the read index.
//!
//! Why this stays linearizable: a read joins a batch only by being received before the
//! batch's check is sent. The check captures the read index (the commit index, or the
//! leader's first entry of its term) when the Raft core handles it, which is after every
//! read of the batch arrived, and it holds only if a quorum still follows this leader after
//! that moment. A read that arrives while a check is in flight waits for the next check; it
//! is never answered by a check that began before it. The tests below pin that rule.

use crate::metrics::Metrics;
use crate::raft::{NodeId, NodeInfo, Raft};
use openraft::error::{CheckIsLeaderError, RaftError};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Reads waiting for a check; callers wait for room beyond this (back-pressure). Also the
/// most reads one check answers.
const MAX_QUEUED_READS: usize = 4096;
/// Batches whose check passed and that wait for the state machine to catch up. One check
/// at a time is in flight; these waits overlap with the next check. Bounded so a stalled
/// state machine pushes back on readers instead of piling up tasks.
const MAX_APPLY_WAITS_IN_FLIGHT: usize = 64;

/// Why a linearizable read cannot be served here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("not the leader")]
    NotLeader {
        leader_id: Option<NodeId>,
        leader_node: Option<NodeInfo>,
    },
    #[error("cannot confirm leadership: {0}")]
    QuorumNotReached(String),
    #[error("node stopped: {0}")]
    Stopped(String),
}

/// What a leadership check returns: the index a linearizable read must see, and the index
/// the state machine had applied when the check began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPoint {
    pub read_index: u64,
    pub applied_index: u64,
}

/// The consensus side a batcher needs; the Raft node in production, a scripted fake in
/// this module's tests.
pub trait ReadIndexSource: Clone + Send + Sync + 'static {
    /// Confirms with a quorum, in a round begun after this call, that this node leads.
    fn confirm_leadership(&self) -> impl Future<Output = Result<ReadPoint, ReadError>> + Send;
    /// Resolves once the state machine has applied `index`.
    fn applied_at_least(&self, index: u64) -> impl Future<Output = Result<(), ReadError>> + Send;
}

impl ReadIndexSource for Raft {
    async fn confirm_leadership(&self) -> Result<ReadPoint, ReadError> {
        match self.get_read_log_id().await {
            Ok((read, applied)) => Ok(ReadPoint {
                read_index: read.map(|l| l.index).unwrap_or(0),
                applied_index: applied.map(|l| l.index).unwrap_or(0),
            }),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ReadError::NotLeader {
                    leader_id: f.leader_id,
                    leader_node: f.leader_node,
                })
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                Err(ReadError::QuorumNotReached(e.to_string()))
            }
            Err(RaftError::Fatal(e)) => Err(ReadError::Stopped(e.to_string())),
        }
    }

    async fn applied_at_least(&self, index: u64) -> Result<(), ReadError> {
        // No timeout is given, so the only error is a shutdown.
        self.wait(None)
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map(|_| ())
            .map_err(|e| ReadError::Stopped(e.to_string()))
    }
}

type Reply = oneshot::Sender<Result<u64, ReadError>>;

#[derive(Clone)]
pub struct ReadBatcher {
    tx: mpsc::Sender<Reply>,
}

impl ReadBatcher {
    /// Starts the batching task; it ends when every `ReadBatcher` clone is dropped.
    pub fn start<S: ReadIndexSource>(source: S, metrics: Arc<Metrics>) -> ReadBatcher {
        let (tx, rx) = mpsc::channel(MAX_QUEUED_READS);
        tokio::spawn(run(source, metrics, rx));
        ReadBatcher { tx }
    }

    /// Waits until a read of local state is linearizable: leadership was confirmed after
    /// this call began and the state machine has applied the read index, which is returned.
    pub async fn linearizable(&self) -> Result<u64, ReadError> {
        let (reply, result) = oneshot::channel();
        if self.tx.send(reply).await.is_err() {
            return Err(ReadError::Stopped("the read batcher has stopped".into()));
        }
        result.await.unwrap_or_else(|_| {
            Err(ReadError::Stopped(
                "the read batcher ended before answering (node shutting down)".into(),
            ))
        })
    }
}

async fn run<S: ReadIndexSource>(source: S, metrics: Arc<Metrics>, mut rx: mpsc::Receiver<Reply>) {
    let apply_waits = Arc::new(Semaphore::new(MAX_APPLY_WAITS_IN_FLIGHT));
    loop {
        // Every read in `batch` was received before the check below is sent.
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_QUEUED_READS {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        debug_assert!(!batch.is_empty() && batch.len() <= MAX_QUEUED_READS);
        metrics.read_batch_reads.observe(batch.len() as f64);
        let point = match source.confirm_leadership().await {
            Ok(p) => p,
            Err(e) => {
                answer(batch, Err(e));
                continue;
            }
        };
        if point.read_index <= point.applied_index {
            answer(batch, Ok(point.read_index));
            continue;
        }
        let Ok(permit) = apply_waits.clone().acquire_owned().await else {
            return; // the semaphore is never closed
        };
        let source = source.clone();
        tokio::spawn(async move {
            let waited = source.applied_at_least(point.read_index).await;
            answer(batch, waited.map(|()| point.read_index));
            drop(permit);
        });
    }
}

fn answer(batch: Vec<Reply>, result: Result<u64, ReadError>) {
    for reply in batch {
        let _ = reply.send(result.clone()); // the reader may have gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::sync::watch;

    /// A scripted consensus side: each check is numbered from 1, reports its number as the
    /// read index, and finishes only when the test releases it; `applied` is a watch the
    /// test moves by hand.
    #[derive(Clone)]
    struct Fake {
        inner: Arc<Mutex<FakeState>>,
        applied: watch::Sender<u64>,
    }

    struct FakeState {
        started: u64,
        gates: Vec<oneshot::Sender<Result<(), ReadError>>>,
        started_tx: Option<mpsc::UnboundedSender<u64>>,
    }

    impl Fake {
        fn new() -> (Fake, mpsc::UnboundedReceiver<u64>) {
            let (tx, rx) = mpsc::unbounded_channel();
            let fake = Fake {
                inner: Arc::new(Mutex::new(FakeState {
                    started: 0,
                    gates: Vec::new(),
                    started_tx: Some(tx),
                })),
                applied: watch::channel(u64::MAX).0,
            };
            (fake, rx)
        }

        /// Lets the oldest unfinished check end with `result`.
        fn release(&self, result: Result<(), ReadError>) {
            let gate = self.inner.lock().unwrap().gates.remove(0);
            gate.send(result).unwrap();
        }
    }

    impl ReadIndexSource for Fake {
        async fn confirm_leadership(&self) -> Result<ReadPoint, ReadError> {
            let (gate, wait) = oneshot::channel();
            let number = {
                let mut s = self.inner.lock().unwrap();
                s.started += 1;
                s.gates.push(gate);
                let _ = s.started_tx.as_ref().unwrap().send(s.started);
                s.started
            };
            wait.await.unwrap()?;
            Ok(ReadPoint {
                read_index: number,
                applied_index: (*self.applied.borrow()).min(number),
            })
        }

        async fn applied_at_least(&self, index: u64) -> Result<(), ReadError> {
            let mut rx = self.applied.subscribe();
            rx.wait_for(|a| *a >= index)
                .await
                .map(|_| ())
                .map_err(|_| ReadError::Stopped("fake dropped".into()))
        }
    }

    fn spawn_read(b: &ReadBatcher) -> tokio::task::JoinHandle<Result<u64, ReadError>> {
        let b = b.clone();
        tokio::spawn(async move { b.linearizable().await })
    }

    /// Awaits `f`, failing the test instead of hanging it when the batcher misbehaves.
    async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
        tokio::time::timeout(std::time::Duration::from_secs(5), f)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    async fn next_check(started: &mut mpsc::UnboundedReceiver<u64>) -> Option<u64> {
        within("a check to start", started.recv()).await
    }

    async fn result(
        read: tokio::task::JoinHandle<Result<u64, ReadError>>,
    ) -> Result<u64, ReadError> {
        within("a read's answer", read).await.unwrap()
    }

    /// Waits until `n` reads sit in the batcher's queue (so they arrived while the check in
    /// flight was running), instead of hoping a number of yields was enough.
    async fn queued(b: &ReadBatcher, n: usize) {
        within("reads to queue", async {
            while MAX_QUEUED_READS - b.tx.capacity() < n {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert_eq!(MAX_QUEUED_READS - b.tx.capacity(), n);
    }

    /// Lets spawned tasks run until they block; only before asserting that something has
    /// not happened.
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn reads_waiting_together_share_one_check() {
        let (fake, mut started) = Fake::new();
        let b = ReadBatcher::start(fake.clone(), Arc::new(Metrics::new()));
        let first = spawn_read(&b);
        assert_eq!(next_check(&mut started).await, Some(1));
        // 20 reads arrive while check 1 is in flight: none may use it, all share check 2.
        let later: Vec<_> = (0..20).map(|_| spawn_read(&b)).collect();
        queued(&b, 20).await;
        fake.release(Ok(()));
        assert_eq!(result(first).await, Ok(1));
        assert_eq!(next_check(&mut started).await, Some(2));
        fake.release(Ok(()));
        for r in later {
            assert_eq!(result(r).await, Ok(2));
        }
        settle().await;
        assert!(started.try_recv().is_err(), "no third check was needed");
    }

    #[tokio::test]
    async fn a_read_is_never_answered_by_a_check_that_began_before_it() {
        let (fake, mut started) = Fake::new();
        let b = ReadBatcher::start(fake.clone(), Arc::new(Metrics::new()));
        // Each read arrives while the previous read's check is in flight.
        let mut reads = Vec::new();
        for n in 1..=5u64 {
            reads.push(spawn_read(&b));
            if n > 1 {
                fake.release(Ok(()));
            }
            assert_eq!(next_check(&mut started).await, Some(n));
        }
        fake.release(Ok(()));
        for (i, r) in reads.into_iter().enumerate() {
            let index = result(r).await.unwrap();
            assert_eq!(index, i as u64 + 1, "read {i} used check {index}");
        }
    }

    #[tokio::test]
    async fn a_failed_check_fails_every_read_of_its_batch_and_the_next_batch_retries() {
        let (fake, mut started) = Fake::new();
        let b = ReadBatcher::start(fake.clone(), Arc::new(Metrics::new()));
        let first = spawn_read(&b);
        assert_eq!(next_check(&mut started).await, Some(1));
        let waiting: Vec<_> = (0..3).map(|_| spawn_read(&b)).collect();
        queued(&b, 3).await;
        let lost = ReadError::NotLeader {
            leader_id: Some(2),
            leader_node: None,
        };
        fake.release(Err(lost.clone()));
        assert_eq!(result(first).await, Err(lost.clone()));
        assert_eq!(next_check(&mut started).await, Some(2));
        fake.release(Err(ReadError::QuorumNotReached("timeout".into())));
        for r in waiting {
            assert_eq!(
                result(r).await,
                Err(ReadError::QuorumNotReached("timeout".into()))
            );
        }
        let after = spawn_read(&b);
        assert_eq!(next_check(&mut started).await, Some(3));
        fake.release(Ok(()));
        assert_eq!(result(after).await, Ok(3));
    }

    #[tokio::test]
    async fn a_read_waits_until_the_state_machine_applied_its_read_index() {
        let (fake, mut started) = Fake::new();
        fake.applied.send_replace(0);
        let b = ReadBatcher::start(fake.clone(), Arc::new(Metrics::new()));
        let read = spawn_read(&b);
        assert_eq!(next_check(&mut started).await, Some(1));
        fake.release(Ok(()));
        settle().await;
        assert!(!read.is_finished(), "answered before index 1 was applied");
        // The batcher is free for the next check while the first batch waits.
        let second = spawn_read(&b);
        assert_eq!(next_check(&mut started).await, Some(2));
        fake.release(Ok(()));
        settle().await;
        assert!(!read.is_finished() && !second.is_finished());
        fake.applied.send_replace(1);
        assert_eq!(result(read).await, Ok(1));
        settle().await;
        assert!(!second.is_finished(), "answered before index 2 was applied");
        fake.applied.send_replace(2);
        assert_eq!(result(second).await, Ok(2));
    }
}
