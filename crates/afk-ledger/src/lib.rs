//! Ledger (work in progress).
