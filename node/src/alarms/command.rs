//! `!alarm LEVEL [DEADLINE] TEXT` typed in any client: on the local send path the node turns
//! the plain message into a proper alarm sent by that user (then checked by policy like any
//! other alarm). The node reads only plaintext: in an encrypted room the command is encrypted
//! text and stays a plain message.

use serde_json::Value;
use tocsin_events::{AlarmBlock, AlarmCommand, parse_command};

use crate::error::{Error, Result};

/// The alarm content for a message whose body is an `!alarm` command; `None` for any other
/// message. A malformed command is 400 with the parser's words, never sent as text.
pub fn rewrite(content: &Value) -> Result<Option<Value>> {
    if content.get("msgtype").and_then(Value::as_str) != Some("m.text")
        || content.get(tocsin_events::ALARM_KEY).is_some()
        || content.get("m.relates_to").is_some()
    {
        return Ok(None);
    }
    let Some(body) = content.get("body").and_then(Value::as_str) else { return Ok(None) };
    let command = match parse_command(body) {
        None => return Ok(None),
        Some(Ok(command)) => command,
        Some(Err(e)) => return Err(Error::bad_json(e.to_string())),
    };
    Ok(Some(alarm_content(&command, &crate::users::random_string(16))))
}

/// The message every client renders, with the block the node tracks.
pub fn alarm_content(command: &AlarmCommand, id: &str) -> Value {
    let mut block = AlarmBlock::new(id, command.level);
    block.ack_deadline_s = command.ack_deadline_s;
    let label = command.level.as_str().to_uppercase();
    let body = format!("🚨 {label} ALARM: {} (acknowledge with a reaction or a reply)", command.text);
    let html = format!(
        "<p>🚨 <strong>{label} ALARM</strong>: {}</p><p><em>Acknowledge with a reaction or a reply.</em></p>",
        escape_html(&command.text)
    );
    block.message(&body, &html)
}

/// Text into HTML text: the five characters with a meaning in HTML, as entities.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_command_becomes_an_alarm_and_other_text_stays() {
        let content = rewrite(&json!({"msgtype": "m.text", "body": "!alarm critical 10m Evacuate <sector> 4"}))
            .expect("valid")
            .expect("a command");
        let block = AlarmBlock::from_content(&content).expect("well-formed").expect("a block");
        assert_eq!(block.level, tocsin_events::AlarmLevel::Critical);
        assert_eq!(block.ack_deadline_s, Some(600));
        assert!(content["body"].as_str().unwrap().contains("Evacuate <sector> 4"));
        assert!(content["formatted_body"].as_str().unwrap().contains("Evacuate &lt;sector&gt; 4"));
        assert!(rewrite(&json!({"msgtype": "m.text", "body": "hello"})).unwrap().is_none());
        assert!(rewrite(&json!({"msgtype": "m.notice", "body": "!alarm info x"})).unwrap().is_none());
        let err = rewrite(&json!({"msgtype": "m.text", "body": "!alarm loud x"})).expect_err("bad level");
        assert!(err.to_string().contains("alarm level must be"), "{err}");
    }
}
