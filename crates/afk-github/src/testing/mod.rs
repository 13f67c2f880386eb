//! The stand-in GitHub (work in progress).

/// A loopback GitHub for tests (work in progress).
pub struct GitHubStandIn;
