//! tocsin-bridge: public warnings into rooms as alarms, and alarms back out as CAP.
//!
//! The bridge is an ordinary Matrix client (a bot account) and never links the node. Alerts come
//! in from [`sources`] (folder drop, pushed CAP), are parsed and validated ([`cap`]), routed by
//! the policy's `[bridge]` rules ([`route`]), rendered as `org.tocsin.alarm` messages
//! ([`render`]) and posted through a persisted outbox ([`outbox`], [`store`]) by the Matrix
//! client ([`matrix`]). [`capout`] serves the alarms of watched rooms as a CAP 1.2 Atom feed.

pub mod app;
pub mod cap;
pub mod capout;
pub mod check;
pub mod config;
pub mod http;
pub mod ingest;
pub mod json;
pub mod matrix;
pub mod metrics;
pub mod net;
pub mod outbox;
pub mod render;
pub mod route;
pub mod sources;
pub mod store;

pub use app::{BridgeError, BridgeHandle, start};
pub use config::Config;
