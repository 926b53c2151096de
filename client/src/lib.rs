//! `laundry-client`: the crate services use to talk to a Laundry List cluster.
//!
//! - Give it several endpoints; it finds the leader (following the leader hint a follower
//!   returns) and remembers it.
//! - Every mutation gets an idempotency key unless the caller set one, and keeps it across
//!   retries, so a retried mutation never applies twice, even across a leader change.
//! - Retries are bounded in count and total time, with exponential backoff; each attempt
//!   has a deadline. Errors are typed ([`ClientError`]).
//! - [`Client::watch`] is a `Stream` of movements that reconnects and resumes by itself.

pub mod admin;
mod coalesce;
mod error;
mod watch;

pub use admin::{AdminClient, AdminResponse};
pub use error::{ClientError, Rejection};
pub use laundry_proto::v1 as pb;

use laundry_proto::v1::inventory_service_client::InventoryServiceClient;
use laundry_proto::LEADER_ADDR_KEY;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// TLS toward the nodes: the CA that signed their certificates, and optionally a client
/// certificate and key (PEM) for clusters that require one.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    pub ca_pem: Vec<u8>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientTls {
    pub fn from_ca_file(path: &std::path::Path) -> Result<Self, ClientError> {
        let ca_pem = std::fs::read(path)
            .map_err(|e| ClientError::Endpoint(format!("CA file {}: {e}", path.display())))?;
        Ok(ClientTls {
            ca_pem,
            identity: None,
        })
    }
}

/// Most endpoints a client learns (its own plus leader hints), so hints cannot grow it.
const MAX_ENDPOINTS: usize = 64;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Deadline of one attempt.
    pub attempt_timeout_ms: u64,
    /// Deadline of a whole call, retries included.
    pub total_timeout_ms: u64,
    /// Most attempts per call.
    pub max_attempts: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// `None`: plain text (the nodes must run with `--plaintext`).
    pub tls: Option<ClientTls>,
    /// Single writes made at the same time travel together in one `WriteMany` call
    /// (`coalesce.rs`); each keeps its own options and answer. Off: one call per write.
    pub coalesce_writes: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            tls: None,
            attempt_timeout_ms: 3_000,
            total_timeout_ms: 20_000,
            max_attempts: 30,
            backoff_initial_ms: 25,
            backoff_max_ms: 800,
            coalesce_writes: true,
        }
    }
}

#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    endpoints: Mutex<Endpoints>,
    /// The write-coalescing task's queue, started by the first coalesced write (and again
    /// if the runtime it ran on has ended).
    coalescer: Mutex<Option<coalesce::Coalescer>>,
    /// Set once a node answered `WriteMany` with UNIMPLEMENTED: writes then go alone.
    write_many_unsupported: AtomicBool,
}

/// Known endpoints (host:port) with a lazily connected channel each, and the one believed
/// to lead. One lock, so the list and the index never disagree.
struct Endpoints {
    list: Vec<(String, Channel)>,
    preferred: usize,
}

fn channel(
    addr: &str,
    connect_timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<Channel, ClientError> {
    let bare = addr
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{bare}"))
        .map_err(|_| ClientError::Endpoint(addr.to_string()))?;
    if let Some(t) = tls {
        let host = bare
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(bare)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let mut cfg = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&t.ca_pem))
            .domain_name(host.to_string());
        if let Some((cert, key)) = &t.identity {
            cfg = cfg.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint
            .tls_config(cfg)
            .map_err(|e| ClientError::Endpoint(format!("{addr}: TLS: {e}")))?;
    }
    Ok(endpoint
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .connect_lazy())
}

/// A fresh idempotency key: `c-`, the wall-clock time in milliseconds as 12 hex digits,
/// then 80 random bits as 20 hex digits, all lowercase (34 characters).
///
/// Why the time first (as in UUIDv7): a node keeps every key for 24 h in a table ordered
/// by key, and looks each new key up before inserting it. Random keys land anywhere among
/// hundreds of thousands, so every lookup walked cold memory (the largest single cost of
/// a follower's apply, benches/RESULTS.md); keys that grow with time land at the table's
/// newest edge, which stays in cache. The 80 random bits keep keys made in the same
/// millisecond, by any number of clients, apart. Every mutation makes one, so it is
/// written into one allocation (formatting each byte took 17).
pub fn new_idempotency_key() -> String {
    use rand::Rng;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const TIME_DIGITS: usize = 12;
    const RANDOM_BYTES: usize = 10;
    // A clock before 1970 gives 0: the key is still unique by its random part.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let random: [u8; RANDOM_BYTES] = rand::thread_rng().gen();
    let mut key = String::with_capacity(2 + TIME_DIGITS + 2 * RANDOM_BYTES);
    key.push_str("c-");
    // 48 bits of milliseconds last until the year 10889.
    for shift in (0..TIME_DIGITS).rev() {
        key.push(char::from(HEX[((now_ms >> (4 * shift)) & 0x0f) as usize]));
    }
    for b in random {
        key.push(char::from(HEX[usize::from(b >> 4)]));
        key.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    debug_assert_eq!(key.len(), 34);
    key
}

macro_rules! mutation {
    ($(#[$doc:meta])* $name:ident, $req:ty, $variant:ident) => {
        $(#[$doc])*
        pub async fn $name(&self, mut req: $req) -> Result<pb::WriteResponse, ClientError> {
            let options = req.options.get_or_insert_with(Default::default);
            if options.idempotency_key.is_empty() {
                options.idempotency_key = new_idempotency_key();
            }
            let op = pb::operation::Op::$variant(req);
            if self.inner.config.coalesce_writes {
                self.coalesced(op).await
            } else {
                self.alone(op).await
            }
        }
    };
}

macro_rules! read {
    ($(#[$doc:meta])* $name:ident, $req:ty, $resp:ty) => {
        $(#[$doc])*
        pub async fn $name(&self, req: $req) -> Result<$resp, ClientError> {
            self.call(&req, |mut c, r| async move { c.$name(r).await }).await
        }
    };
}

impl Client {
    /// A client for the cluster reachable at any of `endpoints` (host:port). Connects lazily.
    pub fn new<S: AsRef<str>>(endpoints: &[S], config: ClientConfig) -> Result<Self, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::Endpoint(String::new()));
        }
        let connect = Duration::from_millis(config.attempt_timeout_ms.min(1_000));
        let eps = endpoints
            .iter()
            .map(|e| {
                Ok((
                    e.as_ref().to_string(),
                    channel(e.as_ref(), connect, config.tls.as_ref())?,
                ))
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                endpoints: Mutex::new(Endpoints {
                    list: eps,
                    preferred: 0,
                }),
                coalescer: Mutex::new(None),
                write_many_unsupported: AtomicBool::new(false),
            }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Endpoints> {
        self.inner
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The endpoints known, the believed leader first.
    pub fn endpoints(&self) -> Vec<String> {
        let eps = self.lock();
        let mut out: Vec<String> = eps.list.iter().map(|(a, _)| a.clone()).collect();
        let n = out.len().max(1);
        out.rotate_left(eps.preferred % n);
        out
    }

    fn current(&self) -> (usize, Channel) {
        let eps = self.lock();
        let p = eps.preferred % eps.list.len();
        (p, eps.list[p].1.clone())
    }

    /// Moves on after a failed attempt: to the hinted leader if the node named one,
    /// otherwise to the next endpoint.
    fn redirect(&self, failed: usize, hint: Option<&str>) {
        let mut eps = self.lock();
        if eps.preferred != failed {
            return; // another call already moved on
        }
        if let Some(addr) = hint {
            if let Some(i) = eps.list.iter().position(|(a, _)| a == addr) {
                eps.preferred = i;
                return;
            }
            let connect = Duration::from_millis(self.inner.config.attempt_timeout_ms.min(1_000));
            if eps.list.len() < MAX_ENDPOINTS {
                if let Ok(ch) = channel(addr, connect, self.inner.config.tls.as_ref()) {
                    eps.list.push((addr.to_string(), ch));
                    eps.preferred = eps.list.len() - 1;
                    return;
                }
            }
        }
        eps.preferred = (failed + 1) % eps.list.len();
    }

    /// Runs one RPC with leader discovery and bounded retries.
    async fn call<Req, Resp, F, Fut>(&self, req: &Req, f: F) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: Fn(InventoryServiceClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let cfg = &self.inner.config;
        let started = Instant::now();
        let total = Duration::from_millis(cfg.total_timeout_ms);
        let mut backoff_ms = cfg.backoff_initial_ms;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (idx, ch) = self.current();
            let mut request = tonic::Request::new(req.clone());
            let left = total.saturating_sub(started.elapsed());
            request.set_timeout(
                Duration::from_millis(cfg.attempt_timeout_ms)
                    .min(left.max(Duration::from_millis(1))),
            );
            let status = match f(
                InventoryServiceClient::new(ch).max_decoding_message_size(16 * 1024 * 1024),
                request,
            )
            .await
            {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(status) => status,
            };
            if !error::retryable(&status) {
                return Err(ClientError::from_status(&status));
            }
            let hint = status
                .metadata()
                .get(LEADER_ADDR_KEY)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            tracing::debug!(attempt = attempts, code = ?status.code(), message = status.message(), ?hint, "retrying");
            let followed_hint = hint.is_some();
            self.redirect(idx, hint.as_deref());
            if attempts >= cfg.max_attempts || started.elapsed() >= total {
                return Err(ClientError::Unavailable {
                    attempts,
                    last: format!("{:?}: {}", status.code(), status.message()),
                });
            }
            if !followed_hint {
                tokio::time::sleep(
                    Duration::from_millis(backoff_ms).min(total.saturating_sub(started.elapsed())),
                )
                .await;
                backoff_ms = (backoff_ms * 2).min(cfg.backoff_max_ms);
            }
        }
    }

    mutation!(create_item, pb::CreateItemRequest, CreateItem);
    mutation!(update_item, pb::UpdateItemRequest, UpdateItem);
    mutation!(create_location, pb::CreateLocationRequest, CreateLocation);
    mutation!(receive, pb::ReceiveRequest, Receive);
    mutation!(ship, pb::ShipRequest, Ship);
    mutation!(adjust, pb::AdjustRequest, Adjust);
    mutation!(transfer, pb::TransferRequest, Transfer);
    mutation!(reserve, pb::ReserveRequest, Reserve);
    mutation!(commit_reservation, pb::CommitReservationRequest, Commit);
    mutation!(release_reservation, pb::ReleaseReservationRequest, Release);

    /// Applies every operation or none. Always its own call (never coalesced).
    pub async fn batch(&self, mut req: pb::BatchRequest) -> Result<pb::WriteResponse, ClientError> {
        let options = req.options.get_or_insert_with(Default::default);
        if options.idempotency_key.is_empty() {
            options.idempotency_key = new_idempotency_key();
        }
        self.call(&req, |mut c, r| async move { c.batch(r).await })
            .await
    }

    /// One write (its idempotency key already set), coalesced with the writes other
    /// callers make at the same time (`coalesce.rs`), or alone once the cluster has
    /// answered `WriteMany` with UNIMPLEMENTED (a node of an earlier release).
    async fn coalesced(&self, op: pb::operation::Op) -> Result<pb::WriteResponse, ClientError> {
        if self.inner.write_many_unsupported.load(Ordering::Relaxed) {
            return self.alone(op).await;
        }
        let coalescer = {
            let mut slot = self
                .inner
                .coalescer
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some(c) if !c.is_closed() => c.clone(),
                _ => slot
                    .insert(coalesce::Coalescer::start(Arc::downgrade(&self.inner)))
                    .clone(),
            }
        };
        coalescer.write(self, op).await
    }

    /// One write in its own call, by its own RPC: the one place that maps an operation to
    /// its RPC (the mutation methods, the coalescer's lone path and its fallback use it).
    pub(crate) async fn alone(
        &self,
        op: pb::operation::Op,
    ) -> Result<pb::WriteResponse, ClientError> {
        use pb::operation::Op as P;
        match op {
            P::CreateItem(r) => {
                self.call(&r, |mut c, r| async move { c.create_item(r).await })
                    .await
            }
            P::UpdateItem(r) => {
                self.call(&r, |mut c, r| async move { c.update_item(r).await })
                    .await
            }
            P::CreateLocation(r) => {
                self.call(&r, |mut c, r| async move { c.create_location(r).await })
                    .await
            }
            P::Receive(r) => {
                self.call(&r, |mut c, r| async move { c.receive(r).await })
                    .await
            }
            P::Ship(r) => {
                self.call(&r, |mut c, r| async move { c.ship(r).await })
                    .await
            }
            P::Adjust(r) => {
                self.call(&r, |mut c, r| async move { c.adjust(r).await })
                    .await
            }
            P::Transfer(r) => {
                self.call(&r, |mut c, r| async move { c.transfer(r).await })
                    .await
            }
            P::Reserve(r) => {
                self.call(&r, |mut c, r| async move { c.reserve(r).await })
                    .await
            }
            P::Commit(r) => {
                self.call(&r, |mut c, r| async move { c.commit_reservation(r).await })
                    .await
            }
            P::Release(r) => {
                self.call(&r, |mut c, r| async move { c.release_reservation(r).await })
                    .await
            }
        }
    }

    /// Notes that the cluster does not know `WriteMany`; later writes go alone.
    pub(crate) fn write_many_unsupported(&self) {
        if !self
            .inner
            .write_many_unsupported
            .swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "a node answered WriteMany with UNIMPLEMENTED (an earlier release?): \
                 sending one call per write from now on"
            );
        }
    }

    read!(get_item, pb::GetItemRequest, pb::GetItemResponse);
    read!(list_items, pb::ListItemsRequest, pb::ListItemsResponse);
    read!(
        list_locations,
        pb::ListLocationsRequest,
        pb::ListLocationsResponse
    );
    read!(get_stock, pb::GetStockRequest, pb::GetStockResponse);
    read!(
        get_reservation,
        pb::GetReservationRequest,
        pb::GetReservationResponse
    );
    read!(
        list_movements,
        pb::ListMovementsRequest,
        pb::ListMovementsResponse
    );

    /// The status of the node at `endpoint` specifically (no retries, no redirection).
    pub async fn node_status(&self, endpoint: &str) -> Result<pb::NodeStatusResponse, ClientError> {
        let ch = channel(
            endpoint,
            Duration::from_millis(self.inner.config.attempt_timeout_ms.min(1_000)),
            self.inner.config.tls.as_ref(),
        )?;
        let mut req = tonic::Request::new(pb::NodeStatusRequest {});
        req.set_timeout(Duration::from_millis(self.inner.config.attempt_timeout_ms));
        InventoryServiceClient::new(ch)
            .node_status(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| match s.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
                    ClientError::Unavailable {
                        attempts: 1,
                        last: s.message().to_string(),
                    }
                }
                _ => ClientError::from_status(&s),
            })
    }

    /// Movements from `from_revision` on, then live, as a stream that reconnects (to any
    /// endpoint) and resumes without gaps or repeats. Ends with an error only after
    /// `max_attempts` consecutive failed connections.
    pub fn watch(
        &self,
        from_revision: u64,
        item: &str,
        location: &str,
    ) -> impl tokio_stream::Stream<Item = Result<pb::Movement, ClientError>> + Send + 'static {
        watch::spawn(
            self.clone(),
            pb::WatchMovementsRequest {
                from_revision,
                item: item.into(),
                location: location.into(),
            },
        )
    }

    pub(crate) fn channel_at(&self, i: usize) -> Channel {
        let eps = self.lock();
        eps.list[i % eps.list.len()].1.clone()
    }

    pub(crate) fn endpoint_count(&self) -> usize {
        self.lock().list.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(eps: &[&str]) -> Client {
        Client::new(eps, ClientConfig::default()).unwrap()
    }

    #[test]
    fn no_endpoints_or_a_bad_one_is_refused() {
        assert!(matches!(
            Client::new::<&str>(&[], ClientConfig::default()),
            Err(ClientError::Endpoint(_))
        ));
        assert!(matches!(
            Client::new(&["bad host:1"], ClientConfig::default()),
            Err(ClientError::Endpoint(_))
        ));
    }

    #[tokio::test]
    async fn a_leader_hint_is_followed_and_unknown_leaders_are_learned() {
        let c = client(&["a:1", "b:2", "c:3"]);
        c.redirect(0, Some("c:3"));
        assert_eq!(c.endpoints()[0], "c:3");
        c.redirect(2, Some("d:4"));
        assert_eq!(c.endpoints()[0], "d:4");
        assert_eq!(c.endpoints().len(), 4);
        // Without a hint: the next endpoint, wrapping around.
        c.redirect(3, None);
        assert_eq!(c.endpoints()[0], "a:1");
        // A stale failure report (another call already moved on) changes nothing.
        c.redirect(2, None);
        assert_eq!(c.endpoints()[0], "a:1");
    }

    #[test]
    fn idempotency_keys_are_unique_and_valid_ids() {
        let keys: std::collections::BTreeSet<String> =
            (0..1000).map(|_| new_idempotency_key()).collect();
        assert_eq!(keys.len(), 1000);
        assert!(keys
            .iter()
            .all(|k| k.len() <= 128 && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')));
        for k in &keys {
            let hex = k.strip_prefix("c-").expect("prefix");
            assert_eq!(hex.len(), 32, "{k}");
            assert!(
                hex.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
                "{k}"
            );
        }
        // Every nibble value appears in the random part: it uses the whole alphabet.
        let seen: std::collections::BTreeSet<char> =
            keys.iter().flat_map(|k| k[14..].chars()).collect();
        assert_eq!(seen.len(), 16);
    }

    #[test]
    fn idempotency_keys_begin_with_the_time_so_later_keys_sort_after() {
        let ms = |k: &str| u64::from_str_radix(&k[2..14], 16).expect("12 hex digits");
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let first = new_idempotency_key();
        // Keys until the clock has moved on a millisecond (bounded: 10^7 keys take ~1 s).
        let second = (0..10_000_000)
            .map(|_| new_idempotency_key())
            .find(|k| ms(k) > ms(&first))
            .expect("the clock moves within ten million keys");
        let after = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(before <= ms(&first) && ms(&first) < ms(&second) && ms(&second) <= after);
        assert!(first < second, "{first} then {second}");
    }
}
