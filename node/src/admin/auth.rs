//! Bearer-token check for mutating admin calls. The comparison runs in time independent of
//! where the tokens differ, so the token cannot be guessed byte by byte from timings.

use super::error::AdminError;
use super::AdminState;
use crate::storage::Engine;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

pub async fn require_token<E: Engine>(
    State(state): State<Arc<AdminState<E>>>,
    req: Request,
    next: Next,
) -> Result<Response, AdminError> {
    let Some(expected) = state.token.as_deref() else {
        return Err(AdminError::new(
            StatusCode::FORBIDDEN,
            "mutating admin calls are disabled: no admin token configured (--admin-token)",
        ));
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(p) if constant_time_eq(p.as_bytes(), expected.as_bytes()) => Ok(next.run(req).await),
        Some(_) => Err(AdminError::new(
            StatusCode::UNAUTHORIZED,
            "wrong admin token",
        )),
        None => Err(AdminError::new(
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer <token>` header",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_comparison() {
        assert!(super::constant_time_eq(b"secret", b"secret"));
        assert!(!super::constant_time_eq(b"secret", b"secreT"));
        assert!(!super::constant_time_eq(b"secret", b"secret2"));
        assert!(!super::constant_time_eq(b"", b"x"));
    }
}
