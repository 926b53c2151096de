//! Errors as RFC 9457 `application/problem+json`. Every failure the API returns goes
//! through [`Problem`], so a client sees one shape with a stable `type` per cause: the
//! store's refusals keep the reason name the store sent (`insufficient-stock`,
//! `item-not-found`...), and the API's own checks (body, headers, parameters) have theirs.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use laundry_client::ClientError;
use serde::Serialize;
use utoipa::ToSchema;

/// Problem `type` URIs are relative (`/problems/<slug>`): stable names a client matches on.
pub const TYPE_PREFIX: &str = "/problems/";

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProblemBody {
    /// `/problems/<slug>`; the slug never changes meaning.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The request id (also in the `x-request-id` header), to find the request in logs.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub request_id: String,
}

#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// Seconds a client should wait before retrying (503 only).
    pub retry_after_s: Option<u32>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            status,
            slug,
            title,
            detail: detail.into(),
            retry_after_s: None,
        }
    }

    pub fn invalid_body(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-body",
            "Invalid request body",
            detail,
        )
    }

    pub fn invalid_parameter(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-parameter",
            "Invalid path or query parameter",
            detail,
        )
    }

    pub fn invalid_header(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-header",
            "Invalid header",
            detail,
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        let mut p = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Store unavailable",
            detail,
        );
        p.retry_after_s = Some(1);
        p
    }

    /// The store's answer, mapped by the reason name it sent (falling back on the code).
    pub fn from_client(e: &ClientError) -> Self {
        use StatusCode as S;
        if let Some(r) = e.rejection() {
            let (status, slug, title) = match r.reason.as_str() {
                "item_not_found" => (S::NOT_FOUND, "item-not-found", "Item not found"),
                "location_not_found" => (S::NOT_FOUND, "location-not-found", "Location not found"),
                "reservation_not_found" => (
                    S::NOT_FOUND,
                    "reservation-not-found",
                    "Reservation not found",
                ),
                "item_exists" => (S::CONFLICT, "item-exists", "Item already exists"),
                "location_exists" => (S::CONFLICT, "location-exists", "Location already exists"),
                "reservation_exists" => (
                    S::CONFLICT,
                    "reservation-exists",
                    "Reservation already exists",
                ),
                "idempotency_key_reused" => (
                    S::UNPROCESSABLE_ENTITY,
                    "idempotency-key-reused",
                    "Idempotency key reused for a different request",
                ),
                "insufficient_stock" => (S::CONFLICT, "insufficient-stock", "Insufficient stock"),
                "wrong_location_kind" => {
                    (S::CONFLICT, "wrong-location-kind", "Wrong kind of location")
                }
                "condition_failed" => (
                    S::PRECONDITION_FAILED,
                    "precondition-failed",
                    "Precondition failed",
                ),
                "reservation_ended" => (S::CONFLICT, "reservation-ended", "Reservation ended"),
                "reservation_expired" => {
                    (S::CONFLICT, "reservation-expired", "Reservation expired")
                }
                "overflow" => (S::CONFLICT, "overflow", "Balance would overflow"),
                "too_large" => (S::BAD_REQUEST, "limit-exceeded", "Limit exceeded"),
                _ => match e {
                    ClientError::NotFound(_) => (S::NOT_FOUND, "not-found", "Not found"),
                    ClientError::AlreadyExists(_) => (S::CONFLICT, "already-exists", "Conflict"),
                    ClientError::FailedPrecondition(_) => {
                        (S::CONFLICT, "failed-precondition", "Refused by the rules")
                    }
                    ClientError::ResourceExhausted(_) => {
                        (S::BAD_REQUEST, "limit-exceeded", "Limit exceeded")
                    }
                    _ => (S::BAD_REQUEST, "invalid-request", "Invalid request"),
                },
            };
            return Problem::new(status, slug, title, r.message.clone());
        }
        let detail = e.to_string();
        match e {
            ClientError::Unavailable { .. } => Problem::unavailable(detail),
            ClientError::Endpoint(_) => Problem::new(
                S::INTERNAL_SERVER_ERROR,
                "misconfigured",
                "Store endpoint misconfigured",
                detail,
            ),
            _ => Problem::new(S::BAD_GATEWAY, "store-error", "Store error", detail),
        }
    }
}

impl From<ClientError> for Problem {
    fn from(e: ClientError) -> Self {
        Problem::from_client(&e)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = ProblemBody {
            kind: format!("{TYPE_PREFIX}{}", self.slug),
            title: self.title.to_string(),
            status: self.status.as_u16(),
            detail: self.detail,
            request_id: crate::request_id::current().unwrap_or_default(),
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = (self.status, json).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after_s {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use laundry_client::Rejection;

    fn rejected(reason: &str) -> Rejection {
        Rejection {
            message: "m".into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn store_refusals_map_by_reason_then_by_code() {
        let p = Problem::from_client(&ClientError::FailedPrecondition(rejected(
            "insufficient_stock",
        )));
        assert_eq!(
            (p.status, p.slug),
            (StatusCode::CONFLICT, "insufficient-stock")
        );
        let p = Problem::from_client(&ClientError::FailedPrecondition(rejected(
            "condition_failed",
        )));
        assert_eq!(p.status, StatusCode::PRECONDITION_FAILED);
        let p = Problem::from_client(&ClientError::AlreadyExists(rejected(
            "idempotency_key_reused",
        )));
        assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
        // No reason (an older node, or an edge check): the code decides.
        let p = Problem::from_client(&ClientError::NotFound(rejected("")));
        assert_eq!((p.status, p.slug), (StatusCode::NOT_FOUND, "not-found"));
        let p = Problem::from_client(&ClientError::InvalidArgument(rejected("")));
        assert_eq!(
            (p.status, p.slug),
            (StatusCode::BAD_REQUEST, "invalid-request")
        );
        let p = Problem::from_client(&ClientError::Unavailable {
            attempts: 3,
            last: "x".into(),
        });
        assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(p.retry_after_s, Some(1));
    }

    #[test]
    fn the_body_is_problem_json_with_a_stable_type() {
        let resp = Problem::not_found("no route").into_response();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
