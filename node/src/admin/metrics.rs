//! `GET /_tocsin/metrics`: Prometheus text format (0.0.4) for the federation list and the
//! outbound backlog, so an expiring or expired list shows up on the operators' dashboards and
//! alerting, not only in the log.
//!
//! Access: the access token of a server admin (Prometheus sends it with `authorization:
//! {credentials_file: ...}` or `bearer_token_file`), like the rest of the admin API. Not
//! "loopback only": the client port usually sits behind a reverse proxy on the same host, and
//! then every request comes from loopback, so the address would protect nothing. Not public
//! either: the member list and the backlog per peer tell an outsider which agencies are
//! unreachable during a crisis.

use std::{fmt::Write, sync::Arc};

use axum::{
    extract::State,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, Uri};

use crate::{
    Services,
    error::{Error, Result},
    federation::sender::Backlog,
    policy::federation::ListState,
};

pub async fn metrics(State(services): State<Arc<Services>>, headers: HeaderMap, uri: Uri) -> Result<Response> {
    super::require_admin(&services, &headers, &uri)?;
    let sender = services.sender.clone();
    let backlog = tokio::task::spawn_blocking(move || sender.backlog()).await.map_err(Error::internal)??;
    let body = render(services.policy.federation.state().as_ref(), &backlog);
    Ok(([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response())
}

/// A label value with `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn gauge(out: &mut String, name: &str, help: &str, samples: &[(String, i64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// The metrics text. Without a configured list, `tocsin_federation_list_configured` is 0 and
/// the list's other series are absent.
pub fn render(list: Option<&ListState>, backlog: &[Backlog]) -> String {
    let mut out = String::new();
    let configured = i64::from(list.is_some());
    gauge(
        &mut out,
        "tocsin_federation_list_configured",
        "Whether a signed federation list is enforced.",
        &[(String::new(), configured)],
    );
    if let Some(state) = list {
        let l = format!("{{name=\"{}\"}}", label(&state.name));
        let flag = |b: bool| vec![(l.clone(), i64::from(b))];
        gauge(
            &mut out,
            "tocsin_federation_list_version",
            "Version of the federation list in force.",
            &[(l.clone(), i64::try_from(state.version).unwrap_or(i64::MAX))],
        );
        gauge(
            &mut out,
            "tocsin_federation_list_expires_in_seconds",
            "Seconds until the federation list in force expires; negative once expired.",
            &[(l.clone(), state.expires_in_secs)],
        );
        gauge(
            &mut out,
            "tocsin_federation_list_expired",
            "1 when the federation list in force has expired (it is still enforced).",
            &flag(state.expired),
        );
        gauge(
            &mut out,
            "tocsin_federation_list_expiry_warning",
            "1 when the federation list in force expires within 7 days or has expired.",
            &flag(state.expired || state.expires_soon),
        );
        gauge(
            &mut out,
            "tocsin_federation_list_members",
            "Members of the federation list in force.",
            &[(l.clone(), i64::try_from(state.members).unwrap_or(i64::MAX))],
        );
        gauge(
            &mut out,
            "tocsin_federation_list_reload_refused",
            "1 when the last federation list file read was refused (bad signature, rollback, expired).",
            &flag(state.last_reload_error.is_some()),
        );
    }
    let per_peer = |f: fn(&Backlog) -> i64| -> Vec<(String, i64)> {
        backlog.iter().map(|b| (format!("{{destination=\"{}\"}}", label(b.destination.as_str())), f(b))).collect()
    };
    gauge(
        &mut out,
        "tocsin_federation_backlog_pdus",
        "Events queued for a peer and not yet delivered.",
        &per_peer(|b| i64::try_from(b.pdus).unwrap_or(i64::MAX)),
    );
    gauge(
        &mut out,
        "tocsin_federation_backlog_edus",
        "Ephemeral events queued for a peer and not yet delivered.",
        &per_peer(|b| i64::try_from(b.edus).unwrap_or(i64::MAX)),
    );
    let _ = writeln!(
        out,
        "# HELP tocsin_federation_dropped_total Items dropped unsent because the peer left the federation list.\n\
         # TYPE tocsin_federation_dropped_total counter"
    );
    for (labels, value) in per_peer(|b| i64::try_from(b.dropped).unwrap_or(i64::MAX)) {
        let _ = writeln!(out, "tocsin_federation_dropped_total{labels} {value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_gauges_and_escapes_labels() {
        let state = ListState {
            name: "Valley \"north\"".into(),
            version: 7,
            expires: "2030-01-01T00:00:00Z".into(),
            members: 3,
            expired: true,
            expires_in_secs: -5,
            expires_soon: false,
            warning: Some("expired".into()),
            last_reload_error: None,
        };
        let text = render(Some(&state), &[]);
        assert!(text.contains("tocsin_federation_list_configured 1\n"), "{text}");
        assert!(text.contains("tocsin_federation_list_version{name=\"Valley \\\"north\\\"\"} 7\n"), "{text}");
        assert!(text.contains("tocsin_federation_list_expires_in_seconds{name=\"Valley \\\"north\\\"\"} -5\n"));
        assert!(text.contains("tocsin_federation_list_expired{name=\"Valley \\\"north\\\"\"} 1\n"));
        assert!(text.contains("tocsin_federation_list_expiry_warning{name=\"Valley \\\"north\\\"\"} 1\n"));
        assert!(text.contains("# TYPE tocsin_federation_list_expired gauge\n"));
        let none = render(None, &[]);
        assert!(none.contains("tocsin_federation_list_configured 0\n") && !none.contains("list_version"), "{none}");
    }
}
