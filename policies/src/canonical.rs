//! A tiny, fully specified TOML writer for canonical output.
//!
//! Strings are written as TOML basic strings: `"` and `\` are escaped as `\"` and `\\`;
//! backspace, tab, newline, form feed and carriage return as `\b \t \n \f \r`; every other
//! control character (U+0000-U+001F and U+007F) as `\uXXXX` with upper-case hex; all other
//! characters are written as they are, in UTF-8. Integers are written in decimal.

/// A TOML basic string literal for `s`, with the escaping rules above.
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Appends `key = "value"\n`.
pub fn write_str(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push_str(" = ");
    out.push_str(&toml_string(value));
    out.push('\n');
}

/// Appends `key = ["a", "b"]\n` (elements escaped as [`toml_string`], separated by `, `).
pub fn write_str_list(out: &mut String, key: &str, values: &[String]) {
    let items: Vec<String> = values.iter().map(|v| toml_string(v)).collect();
    out.push_str(&format!("{key} = [{}]\n", items.join(", ")));
}

/// Appends `key = 123\n`.
pub fn write_int(out: &mut String, key: &str, value: impl std::fmt::Display) {
    out.push_str(&format!("{key} = {value}\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_round_trip_through_toml() {
        let nasty = "a\"b\\c\nd\te\u{1}f\u{7f}g ü 🚒";
        let text = format!("k = {}\n", toml_string(nasty));
        assert_eq!(text, "k = \"a\\\"b\\\\c\\nd\\te\\u0001f\\u007Fg ü 🚒\"\n");
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(parsed.get("k").and_then(|v| v.as_str()), Some(nasty));
    }
}
