//! Group commit: see the crate docs.
