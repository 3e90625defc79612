//! `tocsin-node alarm list|status`: what the command prints of the admin API's answers (the
//! calls go through `admin::cli::Client`).

use super::view::AlarmStatus;

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
