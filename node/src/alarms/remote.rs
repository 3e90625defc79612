//! `tocsin-node alarm list|status`: the running node's admin API over HTTP, with an admin's
//! access token (what an operator needs while an alarm is open).

use super::view::AlarmStatus;

/// Fetches `/_tocsin/admin/alarms[/{id}]` from the node at `base`.
pub async fn fetch(base: &str, token: &str, id: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let base = base.trim_end_matches('/');
    let url = match id {
        Some(id) => {
            let encoded: String =
                percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).collect();
            format!("{base}/_tocsin/admin/alarms/{encoded}")
        }
        None => format!("{base}/_tocsin/admin/alarms"),
    };
    let response = crate::http::outbound::cli_client()?.get(&url).bearer_auth(token).send().await.map_err(|e| {
        anyhow::anyhow!("cannot reach the node at {base}: is it running? (--url, or the config's address): {e}")
    })?;
    let status = response.status();
    let body = response.text().await?;
    let value: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    if status.is_success() {
        return Ok(value);
    }
    let message = value.get("error").and_then(|v| v.as_str()).unwrap_or("no message");
    match status.as_u16() {
        401 | 403 => anyhow::bail!(
            "the node refused the access token ({status}: {message}); alarm commands need a server admin's \
             access token (--token or TOCSIN_ADMIN_TOKEN)"
        ),
        _ => anyhow::bail!("the node answered {status}: {message}"),
    }
}

/// One line per open alarm, for `alarm list`.
pub fn list_text(value: &serde_json::Value) -> anyhow::Result<String> {
    let alarms: Vec<AlarmStatus> =
        serde_json::from_value(value.get("alarms").cloned().unwrap_or_default()).map_err(anyhow::Error::msg)?;
    if alarms.is_empty() {
        return Ok("no open alarms\n".to_owned());
    }
    let mut out = String::new();
    for a in alarms {
        let acked = a.expected.len() - a.waiting.len();
        out.push_str(&format!(
            "{}\t{}\t{}\t{acked}/{} acknowledged\t{} steps\t{}\n",
            a.id,
            a.level,
            a.room_id,
            a.expected.len(),
            a.steps.len(),
            a.body
        ));
    }
    Ok(out)
}
