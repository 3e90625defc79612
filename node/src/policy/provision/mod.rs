//! `policy plan` / `policy apply` on a running node: what the node has ([`current_state`]),
//! what the node policy wants ([`tocsin_policies::plan()`]), and performing the difference
//! ([`apply()`]) through the users and rooms services.
//!
//! Rooms are provisioned by alias: the policy's `#alias` on this server names the room. The
//! room settings the policy describes live in ordinary state events, so every client and every
//! federated server sees them:
//!
//! | setting            | state event                                                        |
//! |--------------------|--------------------------------------------------------------------|
//! | name, topic        | `m.room.name`, `m.room.topic`                                      |
//! | kind               | `m.room.create` `type = "m.space"`                                 |
//! | encryption         | `m.room.encryption`                                                |
//! | history, guests    | `m.room.history_visibility`, `m.room.guest_access`                 |
//! | access rule        | `org.tocsin.access_rule` `{"rule": ...}` (like Tchap's)            |
//! | retention          | `m.room.retention` `{"max_lifetime": ms}` (MSC1763)                |
//! | shared with        | `m.room.server_acl` `allow` (+ `org.tocsin.servers`, see [`acl`])  |
//! | parent space       | `m.space.child` in the space, `m.space.parent` in the room         |
//! | power levels       | `m.room.power_levels` `users`                                      |
//!
//! Every event is sent by the provisioning account, [`PROVISIONER`].

mod apply;
mod read;
pub mod remote;

use serde::{Deserialize, Serialize};

pub use apply::apply;
pub use read::current_state;

/// The account that creates provisioned rooms and sends their state events:
/// `@tocsin-provisioner:<server_name>`, created on first apply, without a password (nobody logs
/// in as it) and without the admin flag (it never calls the admin API).
///
/// Why a server-owned account and not the admin who runs `apply`: the rooms must outlive any
/// one person's account. The creator keeps the power to change names, settings and power
/// levels (from room version 12 on a creator's power is unbounded; before, it holds 100), so a
/// later apply works even after the admin who ran the first one has left, was demoted in a room
/// or was deactivated. It also makes plain in every client's member list and timeline that the
/// room's settings came from policy, not from a colleague.
pub const PROVISIONER: &str = "tocsin-provisioner";

/// Its display name, as members see it in the room.
pub const PROVISIONER_NAME: &str = "Tocsin provisioning";

/// The access rule state event (`{"rule": "restricted" | "unrestricted" | "direct"}`, like
/// Tchap's `im.vector.room.access_rules`); the gate enforces the rule it names.
pub const ACCESS_RULES: &str = "org.tocsin.access_rule";

/// MSC1763's retention state event.
pub const RETENTION: &str = "m.room.retention";

/// The server ACL event and the Tocsin field that keeps the full server names.
pub mod acl {
    use serde_json::{Value, json};

    pub const EVENT: &str = "m.room.server_acl";
    /// The spec matches ACL entries against the host name only (the port is ignored), so
    /// `allow` holds host names; the full server names of the policy (`riverton:8448`) are kept
    /// beside them so a later plan can compare them exactly. A client that rewrites the ACL
    /// drops this field, and the next plan then sets the list again.
    pub const SERVERS: &str = "org.tocsin.servers";

    /// The content of `m.room.server_acl` that allows exactly `servers`.
    pub fn content(servers: &[String]) -> Value {
        let hosts: std::collections::BTreeSet<&str> = servers.iter().map(|s| host(s)).collect();
        let ip_literals =
            hosts.iter().any(|h| h.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok());
        json!({
            "allow": hosts,
            "deny": [],
            "allow_ip_literals": ip_literals,
            SERVERS: servers,
        })
    }

    /// The host part of a server name (`[::1]:8448` -> `[::1]`, `riverton:8448` -> `riverton`).
    pub fn host(server: &str) -> &str {
        if let Some(end) = server.find(']') {
            return &server[..=end];
        }
        server.split(':').next().unwrap_or(server)
    }
}

/// Serialises applies: two at once would both create a missing room (a room's alias is
/// checked when it is created and written after its first events).
#[derive(Default)]
pub struct Provisioning {
    lock: tokio::sync::Mutex<()>,
}

/// A policy written for another node (`[node] server_name`) is not applied here: its accounts
/// and rooms are someone else's.
pub fn wrong_server(s: &crate::Services, policy: &tocsin_policies::NodePolicy) -> Option<String> {
    let named = policy.node.server_name.as_deref()?;
    (named != s.server_name.as_str()).then(|| {
        format!(
            "the policy is for {named} (`[node] server_name`) but this node is {}: nothing is applied",
            s.server_name
        )
    })
}

/// `GET /_tocsin/admin/policy/plan`: the changes, one line each, and what cannot be changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlanView {
    pub server_name: String,
    pub changes: Vec<String>,
    pub conflicts: Vec<String>,
}

/// `POST /_tocsin/admin/policy/apply`: what was done, and where it stopped if it failed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApplyView {
    pub server_name: String,
    /// The changes made, in order, one line each.
    pub applied: Vec<String>,
    /// The changes that failed, each with its error; the others were still made.
    pub failed: Vec<Failure>,
    pub conflicts: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Failure {
    pub change: String,
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::acl;

    #[test]
    fn acl_allows_hosts_and_keeps_full_names() {
        let servers = vec!["riverton:8448".to_owned(), "lakeside".to_owned(), "127.0.0.1:9000".to_owned()];
        let c = acl::content(&servers);
        assert_eq!(c["allow"], serde_json::json!(["127.0.0.1", "lakeside", "riverton"]));
        assert_eq!(c["allow_ip_literals"], true);
        assert_eq!(c[acl::SERVERS], serde_json::json!(servers));
        assert_eq!(acl::host("[::1]:8448"), "[::1]");
        assert_eq!(acl::content(&["a.example".to_owned()])["allow_ip_literals"], false);
    }
}
