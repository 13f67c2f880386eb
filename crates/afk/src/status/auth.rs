//! The actions' bearer token (`[http.token]`, from any secret provider): asked of its provider on
//! every action (a rotated token applies as soon as the provider's cache lets it: at once for a
//! file, after `cache_lifetime` for Vault or a command), and compared in constant time. Without a
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
        // The scheme is case-insensitive (RFC 9110, 11.1).
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
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
    if same_secret(given, expected.expose()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is wrong",
        ))
    }
}

/// Compares digests in constant time, so that neither the token's bytes nor its length show in
/// how long a refusal takes.
fn same_secret(given: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    bool::from(Sha256::digest(given.as_bytes()).ct_eq(&Sha256::digest(expected.as_bytes())))
}
