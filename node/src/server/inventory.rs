//! The public `InventoryService`. Writes are validated, stamped with this node's clock (it
//! is the leader if the write is accepted) and proposed through Raft; the response is what
//! the state machine returned on apply. Reads are linearizable (read index) unless the
//! caller asks for stale. A follower answers writes and linearizable reads with
//! UNAVAILABLE and a leader hint.

use super::convert;
use super::proposer::{ProposeError, Proposed, Proposer};
use super::read_index::{ReadBatcher, ReadError};
use super::status::{self, invalid};
use crate::inventory::{self as inv, check_ids, Command, IdempotencyKey, Op};
use crate::metrics::{Metrics, WriteLabels, WriteOutcome};
use crate::raft::state_machine::{AppliedState, StateMachine, WatchEvent};
use crate::raft::Raft;
use crate::storage::Engine;
use laundry_proto::v1 as pb;
use laundry_proto::v1::inventory_service_server::InventoryService;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

/// Most movements a watcher may have queued before the stream applies back-pressure.
const WATCH_STREAM_DEPTH: usize = 256;
/// Most ledger entries one list or catch-up call examines.
const MOVEMENT_SCAN_BUDGET: usize = 10_000;

pub struct InventoryApi<E: Engine> {
    pub node_id: u64,
    pub raft: Raft,
    pub sm: StateMachine<E>,
    pub metrics: Arc<Metrics>,
    /// Where writes go: batched into Raft entries.
    pub proposer: Proposer,
    /// Where linearizable reads confirm leadership: one quorum round per batch of reads.
    pub reads: ReadBatcher,
    /// A deliberate bug for the fault-injection suite to catch (`--unsafe-test-fault`).
    pub fault: Option<crate::config::TestFault>,
}

type WriteResult = Result<GrpcResponse<pb::WriteResponse>, Status>;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// FNV-1a over the command's canonical JSON (`encoded`): a key reused for a different
/// command is told apart from a retry. Maps are BTreeMaps, so the encoding is deterministic.
fn fingerprint(encoded: &[u8]) -> u64 {
    encoded.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Most writes in one `WriteMany` call (the client sends at most this many).
const MAX_WRITES_PER_CALL: usize = 1024;

/// What a proposal's result is on the wire: the write's response, or its status.
fn proposed_status(result: Proposed) -> Result<pb::WriteResponse, Status> {
    match result {
        Ok(Ok(outcome)) => Ok(convert::write_response(outcome)),
        Ok(Err(e)) => Err(status::domain(e)),
        Err(ProposeError::NotLeader {
            leader_id,
            leader_node,
        }) => Err(status::not_leader(leader_id, leader_node)),
        Err(ProposeError::Membership(e)) => Err(Status::failed_precondition(e)),
        // Both retryable: the client retries under the write's idempotency key.
        Err(e @ (ProposeError::Stopped(_) | ProposeError::Indeterminate(_))) => {
            Err(Status::unavailable(e.to_string()))
        }
        Err(e @ ProposeError::NoResult) => Err(Status::internal(e.to_string())),
    }
}

impl<E: Engine> InventoryApi<E> {
    async fn propose(&self, command: Command, options: Option<pb::WriteOptions>) -> WriteResult {
        let op = command.name();
        let result = match self.prepare(command, options) {
            Ok((command, idempotency, encoded_bytes)) => {
                self.submit(command, idempotency, encoded_bytes).await
            }
            Err(status) => Err(status),
        };
        self.count_write(op, result.as_ref().map(|r| r.get_ref()));
        result
    }

    /// Counts one write by its operation and what became of it (`laundry_writes_total`).
    fn count_write(&self, op: &'static str, result: Result<&pb::WriteResponse, &Status>) {
        let outcome = match result {
            Ok(r) if r.replayed => WriteOutcome::Replayed,
            Ok(_) => WriteOutcome::Applied,
            Err(s) if status::is_refusal(s) => WriteOutcome::Refused,
            Err(_) => WriteOutcome::Failed,
        };
        self.metrics
            .writes
            .get_or_create(&WriteLabels { op, outcome })
            .inc();
    }

    /// Validates `command` with its options: the command to propose, its idempotency key
    /// (with the command's fingerprint) and its encoded size.
    fn prepare(
        &self,
        mut command: Command,
        options: Option<pb::WriteOptions>,
    ) -> Result<(Command, Option<IdempotencyKey>, usize), Status> {
        let options = options.unwrap_or_default();
        command
            .conditions
            .extend(convert::conditions(&options.conditions)?);
        command.validate().map_err(status::domain)?;
        let encoded = serde_json::to_vec(&command)
            .map_err(|e| Status::internal(format!("encode command: {e}")))?;
        let idempotency = if options.idempotency_key.is_empty() {
            None
        } else {
            inv::command::check_id("idempotency_key", &options.idempotency_key)
                .map_err(status::domain)?;
            Some(IdempotencyKey {
                key: options.idempotency_key,
                fingerprint: fingerprint(&encoded),
            })
        };
        Ok((command, idempotency, encoded.len()))
    }

    async fn submit(
        &self,
        command: Command,
        idempotency: Option<IdempotencyKey>,
        encoded_bytes: usize,
    ) -> WriteResult {
        let started = std::time::Instant::now();
        let result = self
            .proposer
            .propose(command, idempotency, encoded_bytes)
            .await;
        if result.is_ok() {
            self.metrics
                .proposal_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        proposed_status(result).map(GrpcResponse::new)
    }

    /// Several independent writes: each is validated and queued in turn (so they can share
    /// an entry), then their results are collected in order. A write refused by the rules
    /// or by validation is answered on its own; any other failure (not the leader, node
    /// stopping) fails the whole call, which the client retries whole under the writes'
    /// idempotency keys (hence required here): a write that did apply is then replayed.
    async fn write_many_inner(
        &self,
        r: pb::WriteManyRequest,
    ) -> Result<pb::WriteManyResponse, Status> {
        if r.writes.is_empty() || r.writes.len() > MAX_WRITES_PER_CALL {
            return Err(invalid(
                "writes",
                format!(
                    "{} writes; a call carries 1 to {MAX_WRITES_PER_CALL}",
                    r.writes.len()
                ),
            ));
        }
        let count = r.writes.len();
        // Each write's operation name (for `count_write`) and its queued proposal.
        let mut queued = Vec::with_capacity(count);
        for (i, w) in r.writes.into_iter().enumerate() {
            let mut name = "unknown";
            let prepared = convert::operation(w, i).and_then(|(op, options)| {
                name = op.name();
                if options
                    .as_ref()
                    .is_none_or(|o| o.idempotency_key.is_empty())
                {
                    return Err(invalid(
                        &format!("writes[{i}].options.idempotency_key"),
                        "required in WriteMany: a call that fails as a whole is retried whole",
                    ));
                }
                self.prepare(Command::single(op), options)
            });
            match prepared {
                Ok((command, idempotency, bytes)) => {
                    // Timed from before the queue, as a lone write is (`submit`).
                    let started = std::time::Instant::now();
                    let ticket = self.proposer.enqueue(command, idempotency, bytes).await;
                    queued.push((name, Ok((started, ticket))));
                }
                Err(status) => queued.push((name, Err(status))),
            }
        }
        let mut outcomes = Vec::with_capacity(count);
        let mut queued = queued.into_iter();
        while let Some((name, q)) = queued.next() {
            let result = match q {
                Ok((started, Ok(ticket))) => {
                    let proposed = ticket.result().await;
                    if proposed.is_ok() {
                        self.metrics
                            .proposal_seconds
                            .observe(started.elapsed().as_secs_f64());
                    }
                    proposed_status(proposed)
                }
                Ok((_, Err(e))) => proposed_status(Err(e)),
                Err(status) => Err(status),
            };
            self.count_write(name, result.as_ref());
            outcomes.push(pb::WriteOutcome {
                result: Some(match result {
                    Ok(resp) => pb::write_outcome::Result::Applied(resp),
                    Err(s) if status::is_refusal(&s) => {
                        pb::write_outcome::Result::Refused(status::refusal(&s))
                    }
                    Err(s) => {
                        // The whole call fails, so every write after this one does too.
                        for (rest, _) in queued {
                            self.count_write(rest, Err(&s));
                        }
                        return Err(s);
                    }
                }),
            });
        }
        // One answer per write, in order (capacity is only a lower bound, so not that).
        debug_assert_eq!(outcomes.len(), count);
        Ok(pb::WriteManyResponse { outcomes })
    }

    async fn single(&self, op: Op, options: Option<pb::WriteOptions>) -> WriteResult {
        self.propose(Command::single(op), options).await
    }

    /// Waits until this node may serve a read at the requested consistency.
    async fn read_barrier(&self, read: Option<pb::ReadOptions>) -> Result<(), Status> {
        let consistency = read.map(|r| r.consistency).unwrap_or(0);
        match pb::Consistency::try_from(consistency) {
            Ok(pb::Consistency::Stale) => Ok(()),
            // The planted bug: serve "linearizable" reads from local state without
            // confirming leadership, as if every node were a current leader.
            Ok(pb::Consistency::Linearizable)
                if self.fault == Some(crate::config::TestFault::LocalReads) =>
            {
                Ok(())
            }
            Ok(pb::Consistency::Linearizable) => match self.reads.linearizable().await {
                Ok(_) => Ok(()),
                Err(ReadError::NotLeader {
                    leader_id,
                    leader_node,
                }) => Err(status::not_leader(leader_id, leader_node)),
                Err(e @ (ReadError::QuorumNotReached(_) | ReadError::Stopped(_))) => {
                    Err(Status::unavailable(e.to_string()))
                }
            },
            Err(_) => Err(invalid(
                "read.consistency",
                format!("unknown value {consistency}"),
            )),
        }
    }

    /// The header of a read served from `st`: taken from the same guard, so the applied
    /// index is exactly the one the answer reflects.
    fn header(&self, st: &AppliedState) -> pb::ReadHeader {
        pb::ReadHeader {
            node_id: self.node_id,
            applied_index: st.last_applied.map(|l| l.index).unwrap_or(0),
        }
    }
}

#[tonic::async_trait]
impl<E: Engine> InventoryService for InventoryApi<E> {
    async fn create_item(&self, r: GrpcRequest<pb::CreateItemRequest>) -> WriteResult {
        let mut r = r.into_inner();
        let options = r.options.take();
        self.single(convert::create_item(r), options).await
    }

    async fn update_item(&self, r: GrpcRequest<pb::UpdateItemRequest>) -> WriteResult {
        let (op, options) = convert::update_item_with_options(r.into_inner());
        self.single(op, options).await
    }

    async fn get_item(
        &self,
        r: GrpcRequest<pb::GetItemRequest>,
    ) -> Result<GrpcResponse<pb::GetItemResponse>, Status> {
        let r = r.into_inner();
        check_ids(&[("id", &r.id)]).map_err(status::domain)?;
        self.read_barrier(r.read).await?;
        let st = self.sm.read();
        let header = self.header(&st);
        let item = st
            .inventory
            .item(&r.id)
            .ok_or_else(|| status::domain(inv::DomainError::ItemNotFound(r.id.clone())))?;
        Ok(GrpcResponse::new(pb::GetItemResponse {
            header: Some(header),
            item: Some(convert::item(item)),
        }))
    }

    async fn list_items(
        &self,
        r: GrpcRequest<pb::ListItemsRequest>,
    ) -> Result<GrpcResponse<pb::ListItemsResponse>, Status> {
        let r = r.into_inner();
        self.read_barrier(r.read).await?;
        let limit = convert::page_size(r.page_size);
        let st = self.sm.read();
        let header = self.header(&st);
        let items: Vec<pb::Item> = st
            .inventory
            .items_after(&r.page_token, limit)
            .into_iter()
            .map(convert::item)
            .collect();
        let next = if items.len() == limit {
            items.last().map(|i| i.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(GrpcResponse::new(pb::ListItemsResponse {
            header: Some(header),
            items,
            next_page_token: next,
        }))
    }

    async fn create_location(&self, r: GrpcRequest<pb::CreateLocationRequest>) -> WriteResult {
        let mut r = r.into_inner();
        let options = r.options.take();
        self.single(convert::create_location(r)?, options).await
    }

    async fn list_locations(
        &self,
        r: GrpcRequest<pb::ListLocationsRequest>,
    ) -> Result<GrpcResponse<pb::ListLocationsResponse>, Status> {
        let r = r.into_inner();
        self.read_barrier(r.read).await?;
        let limit = convert::page_size(r.page_size);
        let st = self.sm.read();
        let header = self.header(&st);
        let locations: Vec<pb::Location> = st
            .inventory
            .locations_after(&r.page_token, limit)
            .into_iter()
            .map(convert::location)
            .collect();
        let next = if locations.len() == limit {
            locations.last().map(|l| l.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(GrpcResponse::new(pb::ListLocationsResponse {
            header: Some(header),
            locations,
            next_page_token: next,
        }))
    }

    async fn receive(&self, r: GrpcRequest<pb::ReceiveRequest>) -> WriteResult {
        let mut r = r.into_inner();
        let options = r.options.take();
        self.single(convert::receive(r), options).await
    }

    async fn ship(&self, r: GrpcRequest<pb::ShipRequest>) -> WriteResult {
        let mut r = r.into_inner();
        let options = r.options.take();
        self.single(convert::ship(r), options).await
    }

    async fn adjust(&self, r: GrpcRequest<pb::AdjustRequest>) -> WriteResult {
        let mut r = r.into_inner();
        let options = r.options.take();
        self.single(convert::adjust(r), options).await
    }

    async fn transfer(&self, r: GrpcRequest<pb::TransferRequest>) -> WriteResult {
        let mut r = r.into_inner();
        let options = r.options.take();
        self.single(convert::transfer(r), options).await
    }

    async fn reserve(&self, r: GrpcRequest<pb::ReserveRequest>) -> WriteResult {
        let mut r = r.into_inner();
        let options = r.options.take();
        self.single(convert::reserve(r), options).await
    }

    async fn commit_reservation(
        &self,
        r: GrpcRequest<pb::CommitReservationRequest>,
    ) -> WriteResult {
        let mut r = r.into_inner();
        let options = r.options.take();
        self.single(convert::commit(r), options).await
    }

    async fn release_reservation(
        &self,
        r: GrpcRequest<pb::ReleaseReservationRequest>,
    ) -> WriteResult {
        let mut r = r.into_inner();
        let options = r.options.take();
        self.single(convert::release(r), options).await
    }

    async fn get_reservation(
        &self,
        r: GrpcRequest<pb::GetReservationRequest>,
    ) -> Result<GrpcResponse<pb::GetReservationResponse>, Status> {
        let r = r.into_inner();
        check_ids(&[("id", &r.id)]).map_err(status::domain)?;
        self.read_barrier(r.read).await?;
        let st = self.sm.read();
        let header = self.header(&st);
        let res = st
            .inventory
            .reservation(&r.id)
            .ok_or_else(|| status::domain(inv::DomainError::ReservationNotFound(r.id.clone())))?;
        Ok(GrpcResponse::new(pb::GetReservationResponse {
            header: Some(header),
            reservation: Some(convert::reservation(res)),
        }))
    }

    async fn batch(&self, r: GrpcRequest<pb::BatchRequest>) -> WriteResult {
        let mut r = r.into_inner();
        let options = r.options.take();
        let command = convert::batch(r)?;
        self.propose(command, options).await
    }

    async fn write_many(
        &self,
        r: GrpcRequest<pb::WriteManyRequest>,
    ) -> Result<GrpcResponse<pb::WriteManyResponse>, Status> {
        if self.fault == Some(crate::config::TestFault::NoWriteMany) {
            return Err(Status::unimplemented(
                "WriteMany (acting as an earlier release)",
            ));
        }
        self.write_many_inner(r.into_inner())
            .await
            .map(GrpcResponse::new)
    }

    async fn get_stock(
        &self,
        r: GrpcRequest<pb::GetStockRequest>,
    ) -> Result<GrpcResponse<pb::GetStockResponse>, Status> {
        let r = r.into_inner();
        check_ids(&[("item", &r.item)]).map_err(status::domain)?;
        if !r.location.is_empty() {
            check_ids(&[("location", &r.location)]).map_err(status::domain)?;
        }
        self.read_barrier(r.read).await?;
        let st = self.sm.read();
        let header = self.header(&st);
        let item = st
            .inventory
            .item(&r.item)
            .ok_or_else(|| status::domain(inv::DomainError::ItemNotFound(r.item.clone())))?;
        let levels = if r.location.is_empty() {
            st.inventory
                .stock_of_item(&r.item)
                .into_iter()
                .map(|(loc, s)| {
                    convert::stock(&r.item, loc, s, threshold_at(&st.inventory, item, loc))
                })
                .collect()
        } else {
            if st.inventory.location(&r.location).is_none() {
                return Err(status::domain(inv::DomainError::LocationNotFound(
                    r.location.clone(),
                )));
            }
            vec![convert::stock(
                &r.item,
                &r.location,
                st.inventory.stock(&r.item, &r.location),
                threshold_at(&st.inventory, item, &r.location),
            )]
        };
        Ok(GrpcResponse::new(pb::GetStockResponse {
            header: Some(header),
            levels,
        }))
    }

    async fn list_movements(
        &self,
        r: GrpcRequest<pb::ListMovementsRequest>,
    ) -> Result<GrpcResponse<pb::ListMovementsResponse>, Status> {
        let r = r.into_inner();
        check_filters(&r.item, &r.location)?;
        let from = convert::parse_cursor(&r.page_token)?.unwrap_or((r.from_revision, 0));
        self.read_barrier(r.read).await?;
        let header = self.header(&self.sm.read()); // a lower bound: the scan below may see later entries
        let (movements, next) = self
            .sm
            .movements(
                from,
                &r.item,
                &r.location,
                convert::page_size(r.page_size),
                MOVEMENT_SCAN_BUDGET,
            )
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(GrpcResponse::new(pb::ListMovementsResponse {
            header: Some(header),
            movements: movements.iter().map(convert::movement).collect(),
            next_page_token: next.map(convert::format_cursor).unwrap_or_default(),
        }))
    }

    type WatchMovementsStream = Pin<Box<dyn Stream<Item = Result<pb::Movement, Status>> + Send>>;

    async fn watch_movements(
        &self,
        r: GrpcRequest<pb::WatchMovementsRequest>,
    ) -> Result<GrpcResponse<Self::WatchMovementsStream>, Status> {
        let r = r.into_inner();
        check_filters(&r.item, &r.location)?;
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_STREAM_DEPTH);
        let sm = self.sm.clone();
        tokio::spawn(async move {
            // Subscribe before reading storage: anything applied later is in `events`, and
            // the cursor drops what the catch-up already sent.
            let mut events = sm.subscribe();
            let mut cursor = (r.from_revision, 0u32);
            let matches = |m: &inv::Movement| {
                (r.item.is_empty() || m.item == r.item)
                    && (r.location.is_empty() || m.from == r.location || m.to == r.location)
            };
            loop {
                // Catch up from storage in bounded pages.
                loop {
                    let page =
                        sm.movements(cursor, &r.item, &r.location, 256, MOVEMENT_SCAN_BUDGET);
                    let (ms, next) = match page {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                            return;
                        }
                    };
                    for m in &ms {
                        if tx.send(Ok(convert::movement(m))).await.is_err() {
                            return;
                        }
                        cursor = (m.revision, m.seq + 1);
                    }
                    match next {
                        Some(n) => cursor = cursor.max(n),
                        None => break,
                    }
                }
                // Then follow live applies until we lag or a snapshot replaces the ledger.
                loop {
                    match events.recv().await {
                        Ok(WatchEvent::Movements(ms)) => {
                            for m in ms.iter() {
                                if (m.revision, m.seq) < cursor {
                                    continue;
                                }
                                if matches(m) && tx.send(Ok(convert::movement(m))).await.is_err() {
                                    return;
                                }
                                cursor = (m.revision, m.seq + 1);
                            }
                        }
                        Ok(WatchEvent::Reset) | Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => return,
                    }
                }
            }
        });
        Ok(GrpcResponse::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn node_status(
        &self,
        _r: GrpcRequest<pb::NodeStatusRequest>,
    ) -> Result<GrpcResponse<pb::NodeStatusResponse>, Status> {
        let m = self.raft.metrics().borrow().clone();
        let (applied, digest) = self.sm.digest();
        let membership = m.membership_config.membership();
        let leader_addr = m
            .current_leader
            .and_then(|l| membership.get_node(&l).map(|n| n.client_addr.clone()))
            .unwrap_or_default();
        Ok(GrpcResponse::new(pb::NodeStatusResponse {
            node_id: self.node_id,
            leader_id: m.current_leader.unwrap_or(0),
            leader_addr,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: applied.map(|l| l.index).unwrap_or(0),
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: m.purged.map(|l| l.index).unwrap_or(0),
            state_digest: digest,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            role: format!("{:?}", m.state),
        }))
    }
}

/// The item's low-stock threshold where it means something: real locations only (a
/// supplier's balance is negative by design).
fn threshold_at(inventory: &inv::Inventory, item: &inv::Item, location: &str) -> i64 {
    match inventory.location(location) {
        Some(l) if !l.kind.is_virtual() => item.low_stock_threshold,
        _ => 0,
    }
}

fn check_filters(item: &str, location: &str) -> Result<(), Status> {
    if !item.is_empty() {
        check_ids(&[("item", item)]).map_err(status::domain)?;
    }
    if !location.is_empty() {
        check_ids(&[("location", location)]).map_err(status::domain)?;
    }
    Ok(())
}

/// Proposes `ExpireDue` when this node leads and something is due. Runs on a timer.
pub async fn propose_expiry<E: Engine>(api: &InventoryApi<E>) {
    let now = now_ms();
    if api.raft.current_leader().await != Some(api.node_id) || !api.sm.expiry_due(now) {
        return;
    }
    let command = Command::single(Op::ExpireDue);
    if let Err(e) = api.submit(command, None, 64).await {
        tracing::debug!(error = %e, "expiry proposal failed; will retry");
    }
}
