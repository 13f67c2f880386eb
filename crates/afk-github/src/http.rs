//! The HTTP details every request to GitHub shares: headers, URL building, and reading GitHub's
//! answers (its `message`, JSON bodies, numeric headers).
//!
//! Both the authenticator (the App token exchange) and the REST client send requests; keeping
//! these helpers here lets each depend on them without depending on the other.

use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;
use url::Url;

use crate::error::GitHubError;

/// The media type GitHub recommends for its REST API.
pub(crate) const ACCEPT_GITHUB_JSON: &str = "application/vnd.github+json";
/// The REST API version afk is written against.
pub(crate) const API_VERSION: &str = "2022-11-28";

/// `{base}/{segments...}?{query}`, each segment percent-encoded; a trailing slash on `base` is fine.
pub(crate) fn join(base: &Url, segments: &[&str], query: &[(&str, &str)]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    url
}

/// A request that could not be sent or whose answer was not received, without the URL's query
/// repeated by reqwest.
pub(crate) fn transport(url: &Url, e: reqwest::Error) -> GitHubError {
    GitHubError::Transport {
        url: url.to_string(),
        reason: e.without_url().to_string(),
    }
}

/// `body` read as `T`; a mismatch names the request.
pub(crate) fn decode<T: DeserializeOwned>(url: &Url, body: &[u8]) -> Result<T, GitHubError> {
    serde_json::from_slice(body).map_err(|e| GitHubError::Decode {
        url: url.to_string(),
        reason: e.to_string(),
    })
}

/// A header read as an unsigned number (`x-ratelimit-remaining`, `Retry-After` in seconds).
pub(crate) fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// GitHub's `message` field, or a short excerpt of a non-JSON body.
pub(crate) fn github_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        message: String,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => b.message,
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_appended_to_the_api_base_with_or_without_a_trailing_slash() {
        for base in ["https://ghe.example/api/v3", "https://ghe.example/api/v3/"] {
            let url = join(
                &Url::parse(base).unwrap(),
                &[
                    "repos",
                    "acme",
                    "widgets",
                    "issues",
                    "1",
                    "labels",
                    "afk:p1 urgent",
                ],
                &[("a", "b c")],
            );
            assert_eq!(
                url.as_str(),
                "https://ghe.example/api/v3/repos/acme/widgets/issues/1/labels/afk:p1%20urgent?a=b+c"
            );
        }
    }

    #[test]
    fn error_message_prefers_githubs_message_field() {
        assert_eq!(
            github_message(br#"{"message":"Bad credentials","documentation_url":"x"}"#),
            "Bad credentials"
        );
        assert_eq!(github_message(b"oops"), "oops");
    }
}
