//! A tower layer on the client port that counts requests by method and gRPC status, and
//! times them by method. The status of a failed call travels in the response headers
//! (trailers-only response); a response without one was accepted (OK).
//!
//! The time runs from the request's arrival here to the handler's answer: it includes
//! decoding the request and everything the node does for it, not encoding and sending the
//! answer. Beside a client's own latency it splits a slow call between the node and the
//! way to and from it (client, network, the client host's scheduling).

use crate::metrics::{code_name, MethodLabels, Metrics, RequestLabels, METHODS};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::codegen::http;

#[derive(Clone)]
pub struct MeteredLayer {
    pub metrics: Arc<Metrics>,
}

impl<S> tower::Layer<S> for MeteredLayer {
    type Service = Metered<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Metered {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for Metered<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        let method = path
            .strip_prefix("/laundry.v1.InventoryService/")
            .and_then(|m| METHODS.iter().find(|known| **known == m).copied());
        let metrics = self.metrics.clone();
        let arrived = std::time::Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            if let Some(method) = method {
                metrics
                    .request_seconds
                    .get_or_create(&MethodLabels { method })
                    .observe(arrived.elapsed().as_secs_f64());
                let code = resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .map(code_name)
                    .unwrap_or("OK");
                metrics
                    .requests
                    .get_or_create(&RequestLabels { method, code })
                    .inc();
            }
            Ok(resp)
        })
    }
}
