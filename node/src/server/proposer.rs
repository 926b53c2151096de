//! Group commit of proposals: concurrent writes are gathered into one Raft entry.
//!
//! Why: openraft 0.9's core appends (and fsyncs) each client write on its own before it
//! looks at the next one, so at 64 clients the leader did one fsync per write (measured:
//! 29 470 log fsyncs for 29 469 entries, benches/RESULTS.md). Here one task takes a
//! proposal, waits while `MAX_BATCHES_IN_FLIGHT` entries are already in consensus, and
//! then takes every proposal that queued up meanwhile (bounded in count and bytes) into
//! one entry. An idle node proposes at once: a lone write waits for nothing.
//!
//! Each command of an entry applies on its own (its own result, its own atomicity, its own
//! revision); see `raft::Request` and `raft::revision`.
//!
//! No entry is awaited forever. openraft 0.9 answers a proposal when its entry applies or is
//! truncated; an entry this node appended as leader, never committed, and that a snapshot
//! then covered (the node was deposed and caught up by snapshot) is neither, and its caller
//! would wait for ever, holding one of the in-flight slots: two such entries stop this
//! node's writes for good (seen in the fault-injection suite). So once this node no longer
//! leads the term it proposed in, an unanswered entry gets `STEP_DOWN_GRACE_MS` and is then
//! reported as `Indeterminate`, and no entry waits longer than `PROPOSAL_TIMEOUT_MS`. Like
//! etcd's "request timed out" and "leader changed", the outcome is unknown: the client
//! retries under the write's idempotency key, which applies it at most once.

use crate::inventory::{Command, DomainError, IdempotencyKey, Outcome};
use crate::metrics::Metrics;
use crate::raft::{NodeId, NodeInfo, Proposal, Raft, Request, Response};
use openraft::error::{ClientWriteError, RaftError};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};
// Tokio's clock, so the unit tests can pause it.
use tokio::time::Instant;

/// Proposals waiting for a batch; callers wait for room beyond this (back-pressure).
const MAX_QUEUED_PROPOSALS: usize = 4096;
/// Entries proposed and not yet applied. Two lets a batch gather while the previous one
/// replicates. Measured at 64 clients on loopback (RESULTS.md): 1, 2 and 4 all give about
/// 6 000 writes/s, 8 gives 5 000 (smaller batches, more fsyncs); two keeps a pipeline for
/// networks slower than loopback.
const MAX_BATCHES_IN_FLIGHT: usize = 2;
/// Most commands in one entry; under `raft::REVISIONS_PER_ENTRY`, which numbers them.
const MAX_BATCH_COMMANDS: usize = 512;
const _: () = assert!((MAX_BATCH_COMMANDS as u64) <= crate::raft::REVISIONS_PER_ENTRY);
/// Most encoded command bytes in one entry (a single larger command goes alone), so an
/// entry stays far below the peer transport's message limit.
const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Longest wait for an entry's outcome, whatever happens. A healthy entry takes
/// milliseconds; a snapshot install or an election takes a second or two. Same order as
/// etcd's request timeout (5 s plus two election timeouts).
const PROPOSAL_TIMEOUT_MS: u64 = 10_000;
/// How long an unanswered entry is still awaited once this node no longer leads the term it
/// was proposed in. A truncated entry is answered at once and a committed one within a
/// heartbeat or two (the new leader's commit index reaches this node, which applies it), so
/// one second is ample; past it the entry is one openraft will not answer.
const STEP_DOWN_GRACE_MS: u64 = 1_000;
/// How often a waiting entry looks at the node's leadership (a read of Raft's metrics).
const LEADERSHIP_CHECK_MS: u64 = 100;
const _: () = assert!(LEADERSHIP_CHECK_MS < STEP_DOWN_GRACE_MS);
const _: () = assert!(STEP_DOWN_GRACE_MS < PROPOSAL_TIMEOUT_MS);

/// Why a proposal got no result from the state machine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader")]
    NotLeader {
        leader_id: Option<NodeId>,
        leader_node: Option<NodeInfo>,
    },
    #[error("membership: {0}")]
    Membership(String),
    #[error("node stopped: {0}")]
    Stopped(String),
    #[error("entry applied without a result for this command")]
    NoResult,
    /// The entry may or may not apply; retrying under the same idempotency key is safe.
    #[error("outcome unknown: {0}; retry with the same idempotency key")]
    Indeterminate(String),
}

/// What the proposer needs from consensus: the seam its unit tests replace.
pub trait Consensus: Clone + Send + Sync + 'static {
    /// Proposes `request` as one entry; its commands' results once it applies.
    fn write(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<Response, ProposeError>> + Send;
    /// The term this node leads now, if it leads.
    fn leading_term(&self) -> Option<u64>;
}

impl Consensus for Raft {
    async fn write(&self, request: Request) -> Result<Response, ProposeError> {
        match self.client_write(request).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader {
                    leader_id: f.leader_id,
                    leader_node: f.leader_node,
                })
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(ProposeError::Membership(e.to_string()))
            }
            Err(RaftError::Fatal(e)) => Err(ProposeError::Stopped(e.to_string())),
        }
    }

    fn leading_term(&self) -> Option<u64> {
        let m = self.metrics();
        let m = m.borrow();
        (m.state == openraft::ServerState::Leader).then_some(m.current_term)
    }
}

pub type Proposed = Result<Result<Outcome, DomainError>, ProposeError>;

struct Pending {
    command: Command,
    idempotency: Option<IdempotencyKey>,
    encoded_bytes: usize,
    reply: oneshot::Sender<Proposed>,
}

#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
}

impl Proposer {
    /// Starts the batching task; it ends when every `Proposer` clone is dropped.
    pub fn start<C: Consensus>(consensus: C, metrics: Arc<Metrics>) -> Proposer {
        let (tx, rx) = mpsc::channel(MAX_QUEUED_PROPOSALS);
        tokio::spawn(run(consensus, metrics, rx));
        Proposer { tx }
    }

    /// Proposes `command`; `encoded_bytes` is its encoded size, for the batch byte bound.
    pub async fn propose(
        &self,
        command: Command,
        idempotency: Option<IdempotencyKey>,
        encoded_bytes: usize,
    ) -> Proposed {
        match self.enqueue(command, idempotency, encoded_bytes).await {
            Ok(ticket) => ticket.result().await,
            Err(e) => Err(e),
        }
    }

    /// Queues `command` (waiting only for queue room) and returns the ticket its result
    /// comes on. Several writes of one call are all queued before any is awaited, so they
    /// can share an entry (`InventoryService::write_many`).
    pub async fn enqueue(
        &self,
        command: Command,
        idempotency: Option<IdempotencyKey>,
        encoded_bytes: usize,
    ) -> Result<Ticket, ProposeError> {
        let (reply, result) = oneshot::channel();
        let pending = Pending {
            command,
            idempotency,
            encoded_bytes,
            reply,
        };
        if self.tx.send(pending).await.is_err() {
            return Err(ProposeError::Stopped("the proposer has stopped".into()));
        }
        Ok(Ticket { result })
    }
}

/// A queued proposal's result, to come.
pub struct Ticket {
    result: oneshot::Receiver<Proposed>,
}

impl Ticket {
    pub async fn result(self) -> Proposed {
        self.result
            .await
            .unwrap_or_else(|_| Err(ProposeError::Stopped("proposal dropped".into())))
    }
}

async fn run<C: Consensus>(consensus: C, metrics: Arc<Metrics>, mut rx: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return; // the semaphore is never closed
        };
        let mut bytes = first.encoded_bytes;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_COMMANDS {
            match rx.try_recv() {
                Ok(p) if bytes + p.encoded_bytes > MAX_BATCH_BYTES => {
                    carried = Some(p);
                    break;
                }
                Ok(p) => {
                    bytes += p.encoded_bytes;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        debug_assert!(!batch.is_empty() && batch.len() <= MAX_BATCH_COMMANDS);
        metrics.proposal_batch_commands.observe(batch.len() as f64);
        tracing::debug!(
            commands = batch.len(),
            free_slots = in_flight.available_permits(),
            "proposing a batch"
        );
        let (consensus, metrics) = (consensus.clone(), metrics.clone());
        tokio::spawn(async move {
            commit(&consensus, &metrics, batch).await;
            drop(permit);
        });
    }
}

/// Proposes `batch` as one entry and hands each command its result.
async fn commit<C: Consensus>(consensus: &C, metrics: &Metrics, batch: Vec<Pending>) {
    let (replies, mut proposals): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|p| {
            let proposal = Proposal {
                command: p.command,
                idempotency: p.idempotency,
            };
            (p.reply, proposal)
        })
        .unzip();
    if proposals.is_empty() {
        return;
    }
    let head = proposals.remove(0);
    let request = Request {
        command: head.command,
        idempotency: head.idempotency,
        batched: Arc::new(proposals),
        numbered: true,
        time_ms: super::inventory::now_ms(),
    };
    let started = Instant::now();
    let written = settle(consensus, request).await;
    tracing::debug!(
        ok = written.is_ok(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "batch answered"
    );
    match written {
        Ok(Response::Applied(results)) if results.len() == replies.len() => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(result)); // the caller may have gone
            }
        }
        Ok(other) => {
            tracing::error!(
                ?other,
                commands = replies.len(),
                "entry applied with the wrong number of results"
            );
            for reply in replies {
                let _ = reply.send(Err(ProposeError::NoResult));
            }
        }
        Err(err) => {
            if let ProposeError::Indeterminate(why) = &err {
                metrics.proposals_unanswered.inc_by(replies.len() as u64);
                tracing::warn!(
                    commands = replies.len(),
                    why,
                    "gave up waiting for an entry"
                );
            }
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

/// Waits for `request`'s outcome, within the bounds in the module's comment.
async fn settle<C: Consensus>(consensus: &C, request: Request) -> Result<Response, ProposeError> {
    let mut proposed_in = consensus.leading_term();
    let written = consensus.write(request);
    tokio::pin!(written);
    let started = Instant::now();
    let mut deposed_at: Option<Instant> = None;
    // Bounded: at most PROPOSAL_TIMEOUT_MS / LEADERSHIP_CHECK_MS rounds.
    loop {
        tokio::select! {
            result = &mut written => return result,
            () = tokio::time::sleep(Duration::from_millis(LEADERSHIP_CHECK_MS)) => {}
        }
        let now = Instant::now();
        if now - started >= Duration::from_millis(PROPOSAL_TIMEOUT_MS) {
            return Err(ProposeError::Indeterminate(format!(
                "no outcome within {PROPOSAL_TIMEOUT_MS} ms"
            )));
        }
        let leading = consensus.leading_term();
        match (proposed_in, deposed_at) {
            // Raft's metrics trail its core by a step: a node that had just been elected
            // when the entry reached its core shows that term only now.
            (None, _) => proposed_in = leading,
            (Some(term), None) if leading != Some(term) => deposed_at = Some(now),
            _ => {}
        }
        if let (Some(term), Some(at)) = (proposed_in, deposed_at) {
            if now - at >= Duration::from_millis(STEP_DOWN_GRACE_MS) {
                return Err(ProposeError::Indeterminate(format!(
                    "this node no longer leads term {term}, in which the entry was proposed, \
                     and the entry was not answered within {STEP_DOWN_GRACE_MS} ms of that"
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The proposer against a scripted consensus: what each write does and when this node
    //! stops leading. Time is paused, so the bounds are checked exactly and at once.
    use super::*;
    use crate::inventory::{LocationKind, Op};
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// What the scripted consensus does with one write.
    enum Plan {
        /// Never answers: the entry openraft 0.9 leaves unanswered.
        Hang,
        /// Answers after a while.
        After(Duration, Result<Response, ProposeError>),
    }

    #[derive(Clone, Default)]
    struct Scripted {
        term: Arc<Mutex<Option<u64>>>,
        plans: Arc<Mutex<VecDeque<Plan>>>,
    }

    impl Scripted {
        fn leading(term: Option<u64>, plans: Vec<Plan>) -> Scripted {
            Scripted {
                term: Arc::new(Mutex::new(term)),
                plans: Arc::new(Mutex::new(plans.into())),
            }
        }

        fn step_down(&self) {
            *self.term.lock().unwrap() = None;
        }
    }

    impl Consensus for Scripted {
        async fn write(&self, request: Request) -> Result<Response, ProposeError> {
            let plan = self.plans.lock().unwrap().pop_front();
            match plan {
                Some(Plan::After(delay, Ok(Response::Applied(_)))) => {
                    tokio::time::sleep(delay).await;
                    // One result per command of the entry, as the state machine gives.
                    let commands = 1 + request.batched.len();
                    Ok(Response::Applied(
                        (0..commands).map(|i| Ok(outcome(i as u64))).collect(),
                    ))
                }
                Some(Plan::After(delay, result)) => {
                    tokio::time::sleep(delay).await;
                    result
                }
                Some(Plan::Hang) | None => std::future::pending().await,
            }
        }

        fn leading_term(&self) -> Option<u64> {
            *self.term.lock().unwrap()
        }
    }

    fn outcome(revision: u64) -> Outcome {
        Outcome {
            revision,
            movements: Vec::new(),
            reservations: Vec::new(),
            replayed: false,
        }
    }

    fn location(id: &str) -> Command {
        Command::single(Op::CreateLocation {
            id: id.into(),
            name: id.into(),
            kind: LocationKind::Warehouse,
        })
    }

    fn applied() -> Plan {
        Plan::After(Duration::from_millis(5), Ok(Response::Applied(Vec::new())))
    }

    /// Proposes one write in a task of its own; its result and when it came.
    fn propose(p: &Proposer, id: &str) -> tokio::task::JoinHandle<(Proposed, Instant)> {
        let (p, command) = (p.clone(), location(id));
        tokio::spawn(async move {
            let result = p.propose(command, None, 64).await;
            (result, Instant::now())
        })
    }

    /// A proposal's result and when it came; fails (rather than hangs) after a minute of
    /// the test's clock.
    async fn answer(task: tokio::task::JoinHandle<(Proposed, Instant)>) -> (Proposed, Instant) {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("a proposal unanswered after a minute")
            .unwrap()
    }

    fn indeterminate(r: &Proposed) -> bool {
        matches!(r, Err(ProposeError::Indeterminate(_)))
    }

    #[tokio::test(start_paused = true)]
    async fn answered_entries_reach_their_callers() {
        let consensus = Scripted::leading(Some(3), vec![applied(), applied()]);
        let p = Proposer::start(consensus, Arc::new(Metrics::new()));
        let (a, _) = answer(propose(&p, "a")).await;
        let (b, _) = answer(propose(&p, "b")).await;
        assert!(matches!(a, Ok(Ok(_))), "{a:?}");
        assert!(matches!(b, Ok(Ok(_))), "{b:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn unanswered_entries_of_a_deposed_leader_end_after_the_grace_and_free_the_proposer() {
        // Two entries openraft never answers fill both in-flight slots; the third write
        // would wait behind them for ever without the bound.
        let refused = ProposeError::NotLeader {
            leader_id: Some(2),
            leader_node: None,
        };
        let consensus = Scripted::leading(
            Some(3),
            vec![
                Plan::Hang,
                Plan::Hang,
                Plan::After(Duration::ZERO, Err(refused)),
            ],
        );
        let metrics = Arc::new(Metrics::new());
        let p = Proposer::start(consensus.clone(), metrics.clone());
        let first = propose(&p, "a");
        tokio::time::sleep(Duration::from_millis(1)).await;
        let second = propose(&p, "b");
        tokio::time::sleep(Duration::from_millis(1)).await;
        let third = propose(&p, "c");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !first.is_finished() && !third.is_finished(),
            "answered while leading"
        );

        consensus.step_down();
        let deposed = Instant::now();
        let (a, a_at) = answer(first).await;
        let (b, _) = answer(second).await;
        let (c, c_at) = answer(third).await;
        assert!(indeterminate(&a) && indeterminate(&b), "{a:?} {b:?}");
        assert!(matches!(c, Err(ProposeError::NotLeader { .. })), "{c:?}");
        let grace = Duration::from_millis(STEP_DOWN_GRACE_MS);
        let check = Duration::from_millis(LEADERSHIP_CHECK_MS);
        // Noticed within one check, then the whole grace.
        assert!(a_at - deposed >= grace, "{:?}", a_at - deposed);
        assert!(a_at - deposed <= grace + check, "{:?}", a_at - deposed);
        assert!(c_at >= a_at);
        // The two given up are counted; the one refused is not.
        assert_eq!(metrics.proposals_unanswered.get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_entry_of_a_leader_ends_at_the_timeout() {
        let consensus = Scripted::leading(Some(3), vec![Plan::Hang, applied()]);
        let p = Proposer::start(consensus, Arc::new(Metrics::new()));
        let started = Instant::now();
        let (a, a_at) = answer(propose(&p, "a")).await;
        assert!(indeterminate(&a), "{a:?}");
        let timeout = Duration::from_millis(PROPOSAL_TIMEOUT_MS);
        let waited = a_at - started;
        assert!(waited >= timeout, "{waited:?}");
        assert!(waited <= timeout + Duration::from_millis(LEADERSHIP_CHECK_MS));
        // The node keeps proposing afterwards.
        let (b, _) = answer(propose(&p, "b")).await;
        assert!(matches!(b, Ok(Ok(_))), "{b:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_answered_within_the_grace_keeps_its_result() {
        // Deposed at once, yet the entry applies (the new leader committed it) 600 ms on.
        let slow = Plan::After(
            Duration::from_millis(600),
            Ok(Response::Applied(Vec::new())),
        );
        let consensus = Scripted::leading(Some(3), vec![slow]);
        let p = Proposer::start(consensus.clone(), Arc::new(Metrics::new()));
        let first = propose(&p, "a");
        consensus.step_down();
        let (a, _) = answer(first).await;
        assert!(matches!(a, Ok(Ok(_))), "{a:?}");
    }
}
