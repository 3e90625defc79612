//! The alarm typed as text in any client: `!alarm critical 10m Evacuate sector 4`.
//!
//! Grammar: `!alarm LEVEL [DEADLINE] TEXT`, where `DEADLINE` is an acknowledgement deadline such
//! as `90s`, `10m`, `1h` or `1h30m`. Without it, the node policy's deadline applies.

use crate::{AlarmLevel, UnknownLevel};

/// The prefix that makes a message an alarm command.
const PREFIX: &str = "!alarm";

/// A parsed `!alarm` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmCommand {
    pub level: AlarmLevel,
    pub ack_deadline_s: Option<u64>,
    pub text: String,
}

/// Why a message that starts with `!alarm` is not a valid command. The node answers it with
/// 400, so the sender sees what to fix instead of a plain message going out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("usage: !alarm critical|urgent|info [DEADLINE like 10m] TEXT")]
    Usage,
    #[error(transparent)]
    Level(#[from] UnknownLevel),
    #[error("the alarm has no text: write what people must do after the level and deadline")]
    NoText,
}

/// `None` when `body` is not an alarm command at all; the parsed command or why it is wrong
/// otherwise.
pub fn parse_command(body: &str) -> Option<Result<AlarmCommand, CommandError>> {
    let rest = body.trim_start().strip_prefix(PREFIX)?;
    // `!alarmist` is a word, not the command.
    if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
        return None;
    }
    Some(parse_args(rest))
}

fn parse_args(rest: &str) -> Result<AlarmCommand, CommandError> {
    let rest = rest.trim_start();
    let (level, rest) = split_word(rest).ok_or(CommandError::Usage)?;
    let level: AlarmLevel = level.to_ascii_lowercase().parse()?;
    let (ack_deadline_s, text) = match split_word(rest) {
        Some((word, after)) => match parse_duration(word) {
            Some(secs) => (Some(secs), after),
            None => (None, rest),
        },
        None => (None, rest),
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(CommandError::NoText);
    }
    Ok(AlarmCommand { level, ack_deadline_s, text: text.to_owned() })
}

fn split_word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    Some(s.split_once(char::is_whitespace).unwrap_or((s, "")))
}

/// `90s`, `10m`, `2h`, `1h30m`, `1d`: whole units, at least one, nothing else.
fn parse_duration(word: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut units = 0;
    for c in word.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        let n: u64 = digits.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        digits.clear();
        units += 1;
    }
    (digits.is_empty() && units > 0 && total > 0).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: &str) -> AlarmCommand {
        parse_command(body).expect("a command").expect("valid")
    }

    #[test]
    fn the_documented_example() {
        assert_eq!(
            parsed("!alarm critical 10m Evacuate sector 4"),
            AlarmCommand { level: AlarmLevel::Critical, ack_deadline_s: Some(600), text: "Evacuate sector 4".into() }
        );
    }

    #[test]
    fn deadline_is_optional_and_compound() {
        assert_eq!(parsed("!alarm urgent Water main burst").ack_deadline_s, None);
        assert_eq!(parsed("!alarm urgent Water main burst").text, "Water main burst");
        assert_eq!(parsed("!alarm INFO 1h30m Drill at 3").ack_deadline_s, Some(5400));
        // A number alone is text, not a deadline.
        assert_eq!(parsed("!alarm info 4 trucks needed").text, "4 trucks needed");
    }

    #[test]
    fn other_messages_are_not_commands() {
        assert!(parse_command("hello").is_none());
        assert!(parse_command("!alarmist talk").is_none());
        assert!(parse_command("say !alarm critical x").is_none());
    }

    #[test]
    fn bad_commands_say_what_is_wrong() {
        assert_eq!(parse_command("!alarm"), Some(Err(CommandError::Usage)));
        assert!(matches!(parse_command("!alarm loud fire"), Some(Err(CommandError::Level(_)))));
        assert_eq!(parse_command("!alarm critical 5m  "), Some(Err(CommandError::NoText)));
    }
}
