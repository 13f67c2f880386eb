//! The actions' bearer token (`[http.token]`, from any secret provider): asked of its provider on
//! every action, so a rotated token applies at once, and compared in constant time. Without a
//! configured token the actions are off (403); a missing or wrong token is 401.

use afk_secrets::{Freshness, SecretProvider};
use axum::http::{header, HeaderMap, StatusCode};
use subtle::ConstantTimeEq;

use super::api::ApiError;

/// Checks the request's `Authorization: Bearer TOKEN` against `token`'s current value.
pub async fn check(token: Option<&dyn SecretProvider>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "actions_off",
            "actions are off: configure [http.token] to turn them on (docs/api.md)",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this action needs an Authorization: Bearer header with [http.token]'s value",
            )
        })?;
    let expected = token.get(Freshness::Cached).await.map_err(|error| {
        // The provider's error names where it looked, never the value.
        tracing::warn!("status surface: [http.token] cannot be read: {error}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "token_unavailable",
            "[http.token] cannot be read now; see afk's log",
        )
    })?;
    if bool::from(given.as_bytes().ct_eq(expected.expose().as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is wrong",
        ))
    }
}
