//! HTTP plumbing shared by every endpoint group: the ruma request extractor, routing of ruma
//! endpoint types, CORS and the fallback for unknown endpoints.

mod extract;
pub mod log;
mod router;

pub use extract::{Auth, Prepare, Ruma};
pub use router::{EndpointRouter, cors, unrecognized};
