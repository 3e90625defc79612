//! The client side of `tocsin-node policy plan` / `policy apply`: finds the running node from
//! its config, calls the admin endpoints with an admin's access token and turns their answers
//! (or their absence) into messages an operator can act on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::de::DeserializeOwned;

use super::{ApplyView, PlanView};
use crate::Config;

/// Where the node's client API answers: `public_base_url` when set, else `http://{listen}`
/// (an unspecified listen address such as 0.0.0.0 is reached on loopback).
pub fn base_url(config: &Config) -> String {
    if let Some(url) = &config.public_base_url {
        return url.trim_end_matches('/').to_owned();
    }
    let mut addr: SocketAddr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    format!("http://{addr}")
}

/// An admin API client for one node.
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AdminClient {
    pub fn new(base: &str, token: &str) -> anyhow::Result<Self> {
        Ok(Self {
            http: crate::http::outbound::cli_client()?,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    pub async fn plan(&self) -> anyhow::Result<PlanView> {
        self.call(reqwest::Method::GET, "plan").await
    }

    pub async fn apply(&self) -> anyhow::Result<ApplyView> {
        self.call(reqwest::Method::POST, "apply").await
    }

    async fn call<T: DeserializeOwned>(&self, method: reqwest::Method, what: &str) -> anyhow::Result<T> {
        let url = format!("{}/_tocsin/admin/policy/{what}", self.base);
        let response = self.http.request(method, &url).bearer_auth(&self.token).send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the node at {}: is it running? (the address comes from the config's \
                 `public_base_url` or `listen`, or --url): {e}",
                self.base
            )
        })?;
        let status = response.status();
        let body = response.text().await?;
        if status.is_success() {
            return serde_json::from_str(&body)
                .map_err(|e| anyhow::anyhow!("{url} answered something that is not a policy {what}: {e}"));
        }
        let error: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let code = error.get("errcode").and_then(|v| v.as_str()).unwrap_or("no errcode");
        let message = error.get("error").and_then(|v| v.as_str()).unwrap_or(body.as_str());
        match status.as_u16() {
            401 | 403 => anyhow::bail!(
                "the node refused the access token ({status}, {code}: {message}); policy {what} needs the access \
                 token of a server admin (--token or TOCSIN_ADMIN_TOKEN)"
            ),
            _ => anyhow::bail!("policy {what} failed on the node ({status}, {code}): {message}"),
        }
    }
}

/// The lines `policy plan` prints.
pub fn plan_text(view: &PlanView) -> String {
    let mut out = String::new();
    if view.changes.is_empty() {
        out += &format!("{} matches its policy: nothing to change\n", view.server_name);
    } else {
        out += &format!("{} change(s) on {}:\n", view.changes.len(), view.server_name);
        for change in &view.changes {
            out += &format!("  {change}\n");
        }
    }
    for conflict in &view.conflicts {
        out += &format!("CONFLICT (not changed): {conflict}\n");
    }
    out
}

/// The lines `policy apply` prints.
pub fn apply_text(view: &ApplyView) -> String {
    let mut out = String::new();
    if view.applied.is_empty() && view.failed.is_empty() {
        out += &format!("{} matches its policy: nothing changed\n", view.server_name);
    } else {
        out += &format!("applied {} change(s) on {}:\n", view.applied.len(), view.server_name);
        for change in &view.applied {
            out += &format!("  {change}\n");
        }
    }
    if !view.failed.is_empty() {
        out += &format!("FAILED {} change(s) (apply again to retry):\n", view.failed.len());
        for failed in &view.failed {
            out += &format!("  {}: {}\n", failed.change, failed.error);
        }
    }
    for conflict in &view.conflicts {
        out += &format!("CONFLICT (not changed): {conflict}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_prefers_public_url_and_reaches_unspecified_on_loopback() {
        let mut config = Config { listen: "0.0.0.0:8008".parse().expect("literal"), ..Config::default() };
        assert_eq!(base_url(&config), "http://127.0.0.1:8008");
        config.listen = "[::]:8010".parse().expect("literal");
        assert_eq!(base_url(&config), "http://[::1]:8010");
        config.public_base_url = Some("https://matrix.riverton.example/".into());
        assert_eq!(base_url(&config), "https://matrix.riverton.example");
    }

    #[test]
    fn failed_changes_are_listed_after_the_applied_ones() {
        let view = ApplyView {
            server_name: "riverton".into(),
            applied: vec!["create account @a".into()],
            failed: vec![super::super::Failure {
                change: "invite @b:lakeside to #x".into(),
                error: "unreachable".into(),
            }],
            conflicts: vec![],
        };
        let text = apply_text(&view);
        assert!(text.contains("applied 1 change(s) on riverton:\n  create account @a\n"), "{text}");
        assert!(
            text.contains("FAILED 1 change(s) (apply again to retry):\n  invite @b:lakeside to #x: unreachable"),
            "{text}"
        );
    }
}
