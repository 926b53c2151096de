//! Write coalescing: the single writes a client's callers make at the same time travel
//! together in one `WriteMany` call.
//!
//! Why: at 64 concurrent writers the leader spent about half its CPU on gRPC and HTTP/2
//! per call (a `perf` profile, benches/RESULTS.md), more than on Raft and the rules
//! together. An API pod serving many requests at once sends one call per group instead.
//!
//! How: one task per client takes a queued write, waits while `MAX_CALLS_IN_FLIGHT` calls
//! are out, then takes every write queued meanwhile (bounded in count and bytes) into one
//! call. A lone write waits for nothing, so an idle client's latency is unchanged. Each
//! write keeps its own options and idempotency key and gets its own answer; a call that
//! fails as a whole is retried whole by `Client::call` (keys make that safe), and its
//! error goes to every write in it.

use crate::{pb, Client, ClientError, Inner};
use prost::Message;
use std::sync::{Arc, Weak};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Writes waiting for a call; callers wait for room beyond this (back-pressure).
pub(crate) const MAX_QUEUED_WRITES: usize = 4096;
/// Calls out at once. While they are, new writes gather into the next one. Two, as the
/// node keeps two Raft entries in flight (`server::proposer`): one call is answered while
/// the next gathers. Measured at 64 writers on loopback (benches/RESULTS.md, fifteenth
/// session) against eight, at 16 500 writes/s: the host busy 144–150 % of a core against
/// 161–163 % (the generator's own CPU 22.1–22.6 s a minute against 25.3–26.7), p50
/// 1.39–1.68 ms against 1.68–1.94, p99 within the runs' spread; closed-loop peaks as high
/// or higher. With sixty-four, writes grouped too little (peak as without coalescing) and
/// the p99 doubled (sixth session).
pub(crate) const MAX_CALLS_IN_FLIGHT: usize = 2;
/// Most writes in one call (the node takes up to 1 024).
pub(crate) const MAX_WRITES_PER_CALL: usize = 256;
/// Most encoded write bytes in one call, far under the node's 4 MiB message limit; a
/// single larger write goes alone.
pub(crate) const MAX_BYTES_PER_CALL: usize = 1024 * 1024;

pub(crate) type Answer = Result<pb::WriteResponse, ClientError>;

pub(crate) struct Queued {
    write: pb::Operation,
    bytes: usize,
    reply: oneshot::Sender<Answer>,
}

impl Queued {
    pub(crate) fn new(op: pb::operation::Op) -> (Queued, oneshot::Receiver<Answer>) {
        let write = pb::Operation { op: Some(op) };
        let (reply, answer) = oneshot::channel();
        let bytes = write.encoded_len();
        (
            Queued {
                write,
                bytes,
                reply,
            },
            answer,
        )
    }
}

/// The way into a running coalescing task.
#[derive(Clone)]
pub(crate) struct Coalescer {
    queue: mpsc::Sender<Queued>,
    /// Permits for calls out; shared by the task and the direct path of `write`.
    in_flight: Arc<Semaphore>,
}

impl Coalescer {
    /// Starts the coalescing task for the client behind `client`. It holds the client only
    /// weakly, so it ends (after answering what it took) once every `Client` is dropped.
    pub(crate) fn start(client: Weak<Inner>) -> Coalescer {
        let (queue, rx) = mpsc::channel(MAX_QUEUED_WRITES);
        let in_flight = Arc::new(Semaphore::new(MAX_CALLS_IN_FLIGHT));
        tokio::spawn(run(client, rx, in_flight.clone()));
        Coalescer { queue, in_flight }
    }

    /// Whether the task is gone (its runtime ended).
    pub(crate) fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// One write's answer. With a free slot and nothing queued, the write goes at once
    /// from the caller's task by its own RPC, exactly as without coalescing (a lone writer
    /// pays nothing: measured 1–3 % slower when it went as a `WriteMany` of one);
    /// otherwise it queues for the next group.
    pub(crate) async fn write(&self, client: &Client, op: pb::operation::Op) -> Answer {
        if self.queue.capacity() == self.queue.max_capacity() {
            if let Ok(permit) = self.in_flight.clone().try_acquire_owned() {
                let answer = client.alone(op).await;
                drop(permit);
                return answer;
            }
        }
        let (queued, answer) = Queued::new(op);
        let stopped = || ClientError::Unavailable {
            attempts: 0,
            last: "the client's write coalescer stopped (its runtime ended?)".into(),
        };
        if self.queue.send(queued).await.is_err() {
            return Err(stopped());
        }
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

async fn run(client: Weak<Inner>, mut rx: mpsc::Receiver<Queued>, in_flight: Arc<Semaphore>) {
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(q) => q,
            None => match rx.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return; // the semaphore is never closed
        };
        let (group, over) = gather(first, &mut rx);
        carried = over;
        let Some(inner) = client.upgrade() else {
            return; // every Client is gone; dropping the group answers its callers
        };
        tokio::spawn(async move {
            send(Client { inner }, group).await;
            drop(permit);
        });
    }
}

/// `first` and every write queued behind it, up to the count and byte bounds; a write
/// that would cross the byte bound comes back to start the next group.
fn gather(first: Queued, rx: &mut mpsc::Receiver<Queued>) -> (Vec<Queued>, Option<Queued>) {
    let mut bytes = first.bytes;
    let mut group = vec![first];
    let mut carried = None;
    while group.len() < MAX_WRITES_PER_CALL {
        match rx.try_recv() {
            Ok(q) if bytes + q.bytes > MAX_BYTES_PER_CALL => {
                carried = Some(q);
                break;
            }
            Ok(q) => {
                bytes += q.bytes;
                group.push(q);
            }
            Err(_) => break,
        }
    }
    debug_assert!(group.len() <= MAX_WRITES_PER_CALL);
    debug_assert!(group.len() == 1 || bytes <= MAX_BYTES_PER_CALL);
    (group, carried)
}

/// Sends one group and hands each write its answer.
async fn send(client: Client, group: Vec<Queued>) {
    let mut writes = Vec::with_capacity(group.len());
    let mut replies = Vec::with_capacity(group.len());
    for q in group {
        writes.push(q.write);
        replies.push(q.reply);
    }
    for (answer, reply) in call(&client, writes).await.into_iter().zip(replies) {
        let _ = reply.send(answer); // the caller may have given up
    }
}

/// One `WriteMany` call (with the client's retries): an answer per write, in order. A
/// node that does not know `WriteMany` (an earlier release, mid-upgrade) makes this and
/// every later write of the client go alone.
async fn call(client: &Client, writes: Vec<pb::Operation>) -> Vec<Answer> {
    let sent = writes.len();
    let request = pb::WriteManyRequest { writes };
    let answered = client
        .call(&request, |mut c, r| async move { c.write_many(r).await })
        .await;
    if matches!(&answered, Err(e) if e.code() == tonic::Code::Unimplemented) {
        client.write_many_unsupported();
        return alone(client, request.writes).await;
    }
    let answers: Vec<Answer> = match answered {
        Ok(resp) if resp.outcomes.len() == sent => resp.outcomes.into_iter().map(answer).collect(),
        Ok(resp) => {
            let e = ClientError::Server {
                code: tonic::Code::Internal,
                message: format!(
                    "the node answered {} outcomes for {sent} writes",
                    resp.outcomes.len()
                ),
            };
            vec![Err(e); sent]
        }
        Err(e) => vec![Err(e); sent],
    };
    debug_assert_eq!(answers.len(), sent);
    answers
}

/// Each write by its own call, all at once; answers in order.
async fn alone(client: &Client, writes: Vec<pb::Operation>) -> Vec<Answer> {
    let mut calls = tokio::task::JoinSet::new();
    for (i, w) in writes.into_iter().enumerate() {
        let client = client.clone();
        calls.spawn(async move {
            let answer = match w.op {
                Some(op) => client.alone(op).await,
                None => Err(ClientError::Server {
                    code: tonic::Code::Internal,
                    message: "an empty write was queued".into(),
                }),
            };
            (i, answer)
        });
    }
    let mut answers: Vec<Option<Answer>> = vec![None; calls.len()];
    while let Some(joined) = calls.join_next().await {
        if let Ok((i, answer)) = joined {
            answers[i] = Some(answer);
        }
    }
    answers
        .into_iter()
        .map(|a| {
            a.unwrap_or_else(|| {
                Err(ClientError::Server {
                    code: tonic::Code::Internal,
                    message: "a write's own call ended without an answer".into(),
                })
            })
        })
        .collect()
}

/// One write's outcome as its lone call would have returned it.
pub(crate) fn answer(outcome: pb::WriteOutcome) -> Answer {
    use pb::write_outcome::Result as R;
    match outcome.result {
        Some(R::Applied(resp)) => Ok(resp),
        Some(R::Refused(r)) => Err(ClientError::from_parts(
            tonic::Code::from_i32(r.code),
            r.message,
            r.reason,
        )),
        None => Err(ClientError::Server {
            code: tonic::Code::Internal,
            message: "the node answered a write with no outcome".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(item: &str) -> Queued {
        Queued::new(pb::operation::Op::Adjust(pb::AdjustRequest {
            item: item.into(),
            location: "w1".into(),
            delta: 1,
            ..Default::default()
        }))
        .0
    }

    #[tokio::test]
    async fn a_group_takes_what_queued_within_the_count_and_byte_bounds() {
        let (tx, mut rx) = mpsc::channel(MAX_QUEUED_WRITES);
        // Count: 300 queued behind a first write make a group of 256, then one of 45.
        for _ in 0..300 {
            tx.send(queued("sku")).await.unwrap();
        }
        let (group, carried) = gather(queued("sku"), &mut rx);
        assert_eq!(group.len(), MAX_WRITES_PER_CALL);
        assert!(carried.is_none());
        let first = rx.try_recv().unwrap();
        let (group, carried) = gather(first, &mut rx);
        assert_eq!(group.len(), 301 - MAX_WRITES_PER_CALL);
        assert!(carried.is_none());
        // Nothing queued: a lone write goes alone.
        let (group, _) = gather(queued("sku"), &mut rx);
        assert_eq!(group.len(), 1);
        // Bytes: writes of ~400 KiB each, three fit under 1 MiB only two at a time; the
        // third is carried to start the next group, and order is kept.
        let big = |n: usize| queued(&format!("{n}{}", "x".repeat(400 * 1024)));
        tx.send(big(2)).await.unwrap();
        tx.send(big(3)).await.unwrap();
        let (group, carried) = gather(big(1), &mut rx);
        assert_eq!(group.len(), 2);
        assert!(group.iter().map(|q| q.bytes).sum::<usize>() <= MAX_BYTES_PER_CALL);
        let carried = carried.expect("the third write is carried over");
        match &carried.write.op {
            Some(pb::operation::Op::Adjust(a)) => assert!(a.item.starts_with('3')),
            other => panic!("{other:?}"),
        }
        // One write over the bound still goes, alone.
        let (group, carried) = gather(queued(&"y".repeat(2 * 1024 * 1024)), &mut rx);
        assert_eq!(group.len(), 1);
        assert!(carried.is_none());
    }

    #[test]
    fn outcomes_become_what_a_lone_call_returns() {
        let applied = pb::WriteResponse {
            revision: 7,
            ..Default::default()
        };
        let got = answer(pb::WriteOutcome {
            result: Some(pb::write_outcome::Result::Applied(applied.clone())),
        });
        assert_eq!(got.unwrap(), applied);
        let got = answer(pb::WriteOutcome {
            result: Some(pb::write_outcome::Result::Refused(pb::WriteRefusal {
                code: tonic::Code::FailedPrecondition as i32,
                message: "insufficient stock".into(),
                reason: "insufficient_stock".into(),
            })),
        });
        match got {
            Err(ClientError::FailedPrecondition(r)) => {
                assert_eq!(r.message, "insufficient stock");
                assert_eq!(r.reason, "insufficient_stock");
            }
            other => panic!("{other:?}"),
        }
        let got = answer(pb::WriteOutcome { result: None });
        assert_eq!(got.unwrap_err().code(), tonic::Code::Internal);
    }
}
