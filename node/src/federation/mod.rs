//! The Server-Server API. Only the key server is here so far: the rest of federation (transport
//! with TLS and X-Matrix, transactions, joins, backfill, the sender queue) is still to come.

pub mod keys;
pub mod sender;
