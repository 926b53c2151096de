//! A tower layer on the client port that counts requests by method and gRPC status. The
//! status of a failed call travels in the response headers (trailers-only response); a
//! response without one was accepted (OK).

use crate::metrics::{code_name, Metrics, RequestLabels, METHODS};
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
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            if let Some(method) = method {
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
