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

use crate::inventory::{Command, DomainError, IdempotencyKey, Outcome};
use crate::metrics::Metrics;
use crate::raft::{NodeId, NodeInfo, Proposal, Raft, Request, Response};
use openraft::error::{ClientWriteError, RaftError};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

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
    pub fn start(raft: Raft, metrics: Arc<Metrics>) -> Proposer {
        let (tx, rx) = mpsc::channel(MAX_QUEUED_PROPOSALS);
        tokio::spawn(run(raft, metrics, rx));
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

async fn run(raft: Raft, metrics: Arc<Metrics>, mut rx: mpsc::Receiver<Pending>) {
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
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch).await;
            drop(permit);
        });
    }
}

/// Proposes `batch` as one entry and hands each command its result.
async fn commit(raft: &Raft, batch: Vec<Pending>) {
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
    match raft.client_write(request).await {
        Ok(resp) => match resp.data {
            Response::Applied(results) if results.len() == replies.len() => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result)); // the caller may have gone
                }
            }
            other => {
                tracing::error!(
                    ?other,
                    commands = replies.len(),
                    "entry applied with the wrong number of results"
                );
                for reply in replies {
                    let _ = reply.send(Err(ProposeError::NoResult));
                }
            }
        },
        Err(e) => {
            let err = match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                    ProposeError::NotLeader {
                        leader_id: f.leader_id,
                        leader_node: f.leader_node,
                    }
                }
                RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                    ProposeError::Membership(e.to_string())
                }
                RaftError::Fatal(e) => ProposeError::Stopped(e.to_string()),
            };
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}
