//! Tocsin's scenario suite: real matrix-sdk clients against in-process and child-process nodes,
//! federation across nodes and with Synapse, and bad input.
//!
//! One test binary on purpose: each binary links matrix-sdk, ruma and the node, so one binary per
//! file cost fifteen links and several GiB of disk per build.

mod api;
mod common;
mod fed;
mod hostile;
mod ops_harness;
// The push gateway lives in the library: the load generator uses it too.
use tocsin_tests::push_gateway;

mod access_rules;
mod account_self_service;
mod alarms;
mod aliases;
mod bad_input;
mod big_rooms;
mod bridge;
mod bridge_bench;
mod bridge_signature;
mod bridge_sources;
mod bridge_start;
mod clients;
mod concurrency;
mod demo;
mod e2ee;
mod element_x_start;
mod federation;
mod federation_bad_input;
mod federation_e2ee;
mod federation_gaps;
mod federation_policy;
mod federation_presence;
mod federation_transport;
mod federation_trust;
mod interop_synapse;
mod jump_to_date;
mod lifecycle;
mod list_lifecycle;
mod many_rooms;
mod notifications;
mod ops_admin;
mod ops_backup;
mod ops_tls;
mod policy_apply;
mod policy_gate;
mod policy_safety;
mod push;
mod refresh_tokens;
mod registration;
mod reports;
mod retention;
mod room_features;
mod search;
mod server_keys;
mod sliding_spaces;
mod sliding_sync;
mod spaces;
mod spec_deviations;
mod sync;
mod sync_wake;
mod threads;
mod thumbnails;
mod trust_bounds;
mod trust_edges;
mod trust_limits;
mod trust_matrix;
mod trust_reads;
mod turn;
mod upgrade;
mod url_previews;
