//! Tocsin multi-node, real-client and interop scenarios, and the load generator.

pub mod cluster;
pub mod cs_client;
pub mod loadgen;
pub mod proxy;
pub mod push_gateway;
