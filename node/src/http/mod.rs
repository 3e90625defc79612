//! HTTP plumbing shared by every endpoint group: the ruma request extractor, routing of ruma
//! endpoint types, rate limits, CORS and the fallback for unknown endpoints.

mod extract;
pub mod log;
pub mod outbound;
pub mod ratelimit;
mod router;

pub use extract::{Auth, Prepare, Ruma, default_field};
pub use ratelimit::{Action, RateLimitConfig, RateLimiter};
pub use router::{EndpointRouter, cors, unrecognized};
