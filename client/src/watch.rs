//! The resumable watch: a task that holds one server stream at a time and, when it breaks,
//! reconnects to the next endpoint from the last movement seen, dropping repeats. A refusal
//! (a status no retry can change, like an invalid filter) ends the stream with that error.

use crate::{pb, Client, ClientError};
use laundry_proto::v1::inventory_service_client::InventoryServiceClient;
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

/// Movements buffered between the connection task and the consumer.
const WATCH_BUFFER: usize = 256;

pub(crate) fn spawn(
    client: Client,
    req: pb::WatchMovementsRequest,
) -> ReceiverStream<Result<pb::Movement, ClientError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
    tokio::spawn(async move {
        // Next position wanted: everything at or after (revision, seq).
        let mut next = (req.from_revision, 0u32);
        let mut failures = 0u32;
        let mut endpoint = 0usize;
        let cfg = client.config().clone();
        loop {
            let mut request = req.clone();
            request.from_revision = next.0;
            let ch = client.channel_at(endpoint);
            let opened = InventoryServiceClient::new(ch)
                .watch_movements(request)
                .await;
            let last_error = match opened {
                Ok(resp) => {
                    let mut stream = resp.into_inner();
                    loop {
                        // Also wake when the consumer goes away, so an idle watch whose
                        // reader left does not hold a server stream open.
                        let next_item = tokio::select! {
                            m = stream.next() => m,
                            _ = tx.closed() => return,
                        };
                        match next_item {
                            Some(Ok(m)) => {
                                failures = 0;
                                if (m.revision, m.seq) < next {
                                    continue; // already delivered before the reconnect
                                }
                                next = (m.revision, m.seq + 1);
                                if tx.send(Ok(m)).await.is_err() {
                                    return; // consumer dropped the stream
                                }
                            }
                            Some(Err(s)) if !crate::error::retryable(&s) => {
                                let _ = tx.send(Err(ClientError::from_status(&s))).await;
                                return; // a refusal (bad filter...) will not heal by retrying
                            }
                            Some(Err(s)) => break s.message().to_string(),
                            None => break "server closed the stream".to_string(),
                        }
                    }
                }
                Err(s) if !crate::error::retryable(&s) => {
                    let _ = tx.send(Err(ClientError::from_status(&s))).await;
                    return;
                }
                Err(s) => s.message().to_string(),
            };
            failures += 1;
            if failures >= cfg.max_attempts {
                let _ = tx
                    .send(Err(ClientError::Unavailable {
                        attempts: failures,
                        last: last_error,
                    }))
                    .await;
                return;
            }
            endpoint = (endpoint + 1) % client.endpoint_count();
            let backoff = (cfg.backoff_initial_ms << failures.min(6)).min(cfg.backoff_max_ms);
            tokio::time::sleep(Duration::from_millis(backoff)).await;
            if tx.is_closed() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}
