//! Structure-aware mutations of seeds, driven by a [`Tape`].

use serde_json::{Map, Number, Value};

use crate::{Seed, Tape};

/// How a seed is mutated, from its file name's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.json`: edits of the JSON tree (replace, delete, insert, graft from another seed,
    /// wrap), then sometimes byte edits of the serialised text.
    Json,
    /// `.toml`: edits of the TOML tree (through the same JSON edits), or line and byte edits of
    /// the text (which keep comments and layout, where diagnostics compute positions).
    Toml,
    /// Anything else: byte edits.
    Bytes,
}

impl Format {
    pub fn of(file_name: &str) -> Self {
        if file_name.ends_with(".json") {
            Format::Json
        } else if file_name.ends_with(".toml") {
            Format::Toml
        } else {
            Format::Bytes
        }
    }
}

/// Text that parsers of JSON, TOML, identifiers and timestamps tend to care about.
const JUNK: &[&str] = &[
    "\"",
    "'",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    ",",
    "=",
    ":",
    "\n",
    "\r\n",
    "#",
    "\\",
    "\\u",
    "\\u0000",
    "\\ud800",
    "é",
    "🚒",
    "\u{202e}",
    "\u{feff}",
    "0x",
    "-",
    "+",
    "9999999999999999999999",
    "1e999",
    "-0",
    "nan",
    "inf",
    "true",
    "null",
    "\"\"\"",
    "'''",
    "1979-05-27T07:32:00Z",
    "1979-05-27T07:32:00.999999+23:59",
    "0000-00-00T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "07:32:00",
    " ",
    "\t",
    "\0",
];

const STRINGS: &[&str] = &[
    "",
    " ",
    "\0",
    "é",
    "🚒",
    "\u{202e}",
    "$",
    "!",
    "@",
    "#",
    ":",
    "@:",
    "@a:",
    "@a:b",
    "@A:b",
    "@a:b:0",
    "@a:b:99999999",
    "@a:[::1]:8448",
    "@a:[::1",
    "!a:b",
    "!abc",
    "$abc",
    "$abc:b",
    "#a:b",
    "a:b",
    "riverton:8448",
    "ed25519:abc",
    "ed25519:",
    "*",
    "m.*",
    "m.room.*",
    "1",
    "-1",
    "9007199254740993",
    "t1_2_3",
    "t18446744073709551615_0",
    "p5",
    "1h",
    "0s",
    "99999999999999999999d",
    "2025-01-01T00:00:00Z",
    "-0001-01-01T00:00:00Z",
];

/// The most one edit may add, so that inputs stay cheap to make (the limits of a PDU, 64 KiB,
/// and of a request body, 1 MiB, are still crossed).
const MAX_GROWTH: usize = 256 * 1024;

const NUMBERS: &[i64] =
    &[0, 1, -1, 2, 50, 51, 100, 101, 9_007_199_254_740_991, -9_007_199_254_740_991, i64::MAX, i64::MIN];

/// One mutated input made from a seed the tape picks. `seeds` must not be empty.
pub fn mutate(seeds: &[Seed], dict: &[&str], tape: &mut Tape<'_>) -> Vec<u8> {
    let Some(seed) = tape.pick(seeds) else { return Vec::new() };
    let mut out = match seed.format {
        Format::Json => match serde_json::from_slice::<Value>(&seed.bytes) {
            Ok(mut value) => {
                edit_tree(&mut value, seeds, dict, tape);
                let mut out = serde_json::to_vec(&value).unwrap_or_else(|_| seed.bytes.clone());
                if tape.one_in(4) {
                    edit_bytes(&mut out, dict, tape);
                }
                out
            }
            Err(_) => seed.bytes.clone(),
        },
        Format::Toml => match std::str::from_utf8(&seed.bytes).ok().and_then(|t| t.parse::<toml::Table>().ok()) {
            Some(table) if tape.one_in(2) => {
                let mut value = Value::Object(table.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect());
                edit_tree(&mut value, seeds, dict, tape);
                let mut out = match json_to_toml(&value, tape) {
                    Some(toml::Value::Table(t)) => toml::to_string(&t).map(String::into_bytes).ok(),
                    Some(other) => {
                        toml::to_string(&toml::Table::from_iter([("x".to_owned(), other)])).map(String::into_bytes).ok()
                    }
                    None => None,
                }
                .unwrap_or_else(|| seed.bytes.clone());
                if tape.one_in(3) {
                    edit_bytes(&mut out, dict, tape);
                }
                out
            }
            _ => {
                let mut out = seed.bytes.clone();
                edit_bytes(&mut out, dict, tape);
                out
            }
        },
        Format::Bytes => {
            let mut out = seed.bytes.clone();
            edit_bytes(&mut out, dict, tape);
            out
        }
    };
    if out.len() > 1 << 20 {
        out.truncate(1 << 20);
    }
    out
}

fn edit_tree(root: &mut Value, seeds: &[Seed], dict: &[&str], tape: &mut Tape<'_>) {
    for _ in 0..1 + tape.below(4) {
        let donor = graft(seeds, tape);
        let node = pick_node(root, tape);
        edit_node(node, donor, dict, tape);
    }
}

/// A node of some JSON seed, for grafting into another place.
fn graft(seeds: &[Seed], tape: &mut Tape<'_>) -> Option<Value> {
    if !tape.one_in(5) {
        return None;
    }
    let seed = tape.pick(seeds)?;
    let mut value: Value = serde_json::from_slice(&seed.bytes).ok()?;
    Some(pick_node(&mut value, tape).clone())
}

fn pick_node<'v>(mut node: &'v mut Value, tape: &mut Tape<'_>) -> &'v mut Value {
    loop {
        let len = match &*node {
            Value::Array(a) => a.len(),
            Value::Object(o) => o.len(),
            _ => 0,
        };
        if len == 0 || tape.one_in(4) {
            return node;
        }
        let i = tape.below(len);
        node = match node {
            Value::Array(a) => &mut a[i],
            Value::Object(o) => match o.values_mut().nth(i) {
                Some(child) => child,
                None => unreachable!("index below the length"),
            },
            _ => unreachable!("only containers have children"),
        };
    }
}

fn edit_node(node: &mut Value, donor: Option<Value>, dict: &[&str], tape: &mut Tape<'_>) {
    if let Some(donor) = donor {
        *node = donor;
        return;
    }
    match tape.below(8) {
        0 => *node = interesting(dict, tape, 0),
        1 => match node {
            Value::Object(o) if !o.is_empty() => {
                let i = tape.below(o.len());
                if let Some(key) = o.keys().nth(i).cloned() {
                    o.remove(&key);
                }
            }
            Value::Array(a) if !a.is_empty() => {
                let i = tape.below(a.len());
                a.remove(i);
            }
            _ => *node = Value::Null,
        },
        2 => match node {
            Value::Object(o) => {
                let key = word(dict, tape);
                o.insert(key, interesting(dict, tape, 0));
            }
            Value::Array(a) => {
                let item = match tape.pick(a) {
                    Some(existing) if tape.one_in(2) => existing.clone(),
                    _ => interesting(dict, tape, 0),
                };
                a.push(item);
            }
            _ => *node = interesting(dict, tape, 0),
        },
        3 => {
            // Many copies: past the limits (50 PDUs, 100 EDUs) and into the slow paths.
            let times = [2, 51, 101, 300][tape.below(4)];
            if serde_json::to_vec(node).map_or(usize::MAX, |v| v.len()).saturating_mul(times) <= MAX_GROWTH {
                let copy = node.clone();
                *node = Value::Array(vec![copy; times]);
            }
        }
        4 => {
            let inner = std::mem::take(node);
            *node = if tape.one_in(2) {
                Value::Array(vec![inner])
            } else {
                Value::Object(Map::from_iter([(word(dict, tape), inner)]))
            };
        }
        5 => match node {
            Value::String(s) => edit_string(s, dict, tape),
            Value::Number(n) => *node = tweak_number(n, tape),
            Value::Bool(b) => *b = !*b,
            _ => *node = Value::String(word(dict, tape)),
        },
        6 => *node = Value::String(word(dict, tape)),
        _ => {
            // The same type, another value: keeps most of the structure valid.
            *node = match node {
                Value::String(_) => Value::String(word(dict, tape)),
                Value::Number(_) => number(tape),
                Value::Object(o) => {
                    let mut o = std::mem::take(o);
                    o.insert(word(dict, tape), interesting(dict, tape, 0));
                    Value::Object(o)
                }
                _ => interesting(dict, tape, 0),
            }
        }
    }
}

fn edit_string(s: &mut String, dict: &[&str], tape: &mut Tape<'_>) {
    match tape.below(5) {
        0 => {
            let mut at = tape.below(s.len() + 1);
            while !s.is_char_boundary(at) {
                at -= 1;
            }
            s.truncate(at);
        }
        1 => s.push_str(&word(dict, tape)),
        2 => {
            let mut at = tape.below(s.len() + 1);
            while !s.is_char_boundary(at) {
                at -= 1;
            }
            let junk = tape.pick(JUNK).copied().unwrap_or_default();
            s.insert_str(at, junk);
        }
        3 => {
            let times = 1 + tape.below(64);
            if s.len().saturating_mul(times) <= MAX_GROWTH {
                *s = s.repeat(times);
            }
        }
        _ => *s = s.to_uppercase(),
    }
}

fn tweak_number(n: &Number, tape: &mut Tape<'_>) -> Value {
    let base = n.as_i64().unwrap_or(0);
    match tape.below(4) {
        0 => Value::from(base.wrapping_add(1)),
        1 => Value::from(base.wrapping_sub(1)),
        2 => Value::from(base.wrapping_neg()),
        _ => Number::from_f64(base as f64 + 0.5).map_or(Value::Null, Value::Number),
    }
}

fn number(tape: &mut Tape<'_>) -> Value {
    match tape.below(NUMBERS.len() + 3) {
        i if i < NUMBERS.len() => Value::from(NUMBERS[i]),
        i if i == NUMBERS.len() => Value::from(u64::MAX),
        i if i == NUMBERS.len() + 1 => Number::from_f64(1.5).map_or(Value::Null, Value::Number),
        _ => Number::from_f64(-1e300).map_or(Value::Null, Value::Number),
    }
}

fn word(dict: &[&str], tape: &mut Tape<'_>) -> String {
    if !dict.is_empty() && tape.one_in(2) {
        return tape.pick(dict).map(|s| (*s).to_owned()).unwrap_or_default();
    }
    tape.pick(STRINGS).map(|s| (*s).to_owned()).unwrap_or_default()
}

fn interesting(dict: &[&str], tape: &mut Tape<'_>, depth: usize) -> Value {
    match tape.below(12) {
        0 => Value::Null,
        1 => Value::Bool(tape.one_in(2)),
        2 | 3 => number(tape),
        4..=6 => Value::String(word(dict, tape)),
        7 => Value::String("x".repeat([255, 256, 65_536][tape.below(3)])),
        8 => {
            // Deep nesting: past serde_json's recursion limit (128) and below it.
            let depth = [20, 127, 129, 400][tape.below(4)];
            (0..depth).fold(Value::Null, |inner, _| Value::Array(vec![inner]))
        }
        9 if depth < 3 => Value::Array((0..tape.below(4)).map(|_| interesting(dict, tape, depth + 1)).collect()),
        10 if depth < 3 => {
            Value::Object((0..tape.below(4)).map(|_| (word(dict, tape), interesting(dict, tape, depth + 1))).collect())
        }
        _ => Value::Object(Map::new()),
    }
}

fn edit_bytes(bytes: &mut Vec<u8>, dict: &[&str], tape: &mut Tape<'_>) {
    for _ in 0..1 + tape.below(3) {
        let text_at = |bytes: &[u8], at: usize| match std::str::from_utf8(bytes) {
            // Cut text at character boundaries: the interesting cases are in the parsers, not
            // in UTF-8 validation, which rejects everything else.
            Ok(text) => (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0),
            Err(_) => at,
        };
        let at = text_at(bytes, tape.below(bytes.len() + 1));
        match tape.below(7) {
            0 | 1 => {
                let junk =
                    if tape.one_in(3) { word(dict, tape) } else { tape.pick(JUNK).copied().unwrap_or_default().into() };
                bytes.splice(at..at, junk.into_bytes());
            }
            2 => {
                let end = text_at(bytes, (at + 1 + tape.below(16)).min(bytes.len())).max(at);
                bytes.drain(at..end);
            }
            3 => bytes.truncate(at),
            4 => {
                let end = text_at(bytes, (at + 1 + tape.below(64)).min(bytes.len())).max(at);
                let copy = bytes[at..end].to_vec();
                let to = text_at(bytes, tape.below(bytes.len() + 1));
                bytes.splice(to..to, copy);
            }
            5 => {
                if let Some(b) = bytes.get_mut(at) {
                    *b = tape.byte();
                }
            }
            _ => {
                // A new line: a key with a value, as a policy or config file would have.
                let line = format!("\n{} = {}\n", word(dict, tape), tape.pick(JUNK).copied().unwrap_or_default());
                bytes.splice(at..at, line.into_bytes());
            }
        }
    }
}

fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(t.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect()),
    }
}

/// Back to TOML: nulls are dropped (TOML has none), and strings that read as dates become TOML
/// datetimes half of the time.
fn json_to_toml(v: &Value, tape: &mut Tape<'_>) -> Option<toml::Value> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => match s.parse::<toml::value::Datetime>() {
            Ok(d) if tape.one_in(2) => toml::Value::Datetime(d),
            _ => toml::Value::String(s.clone()),
        },
        Value::Array(a) => toml::Value::Array(a.iter().filter_map(|v| json_to_toml(v, tape)).collect()),
        Value::Object(o) => {
            toml::Value::Table(o.iter().filter_map(|(k, v)| Some((k.clone(), json_to_toml(v, tape)?))).collect())
        }
    })
}
