//! GitHub adapter (work in progress).
