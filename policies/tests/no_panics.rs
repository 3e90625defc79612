//! Mangled input never panics: every byte-level edit of the examples yields diagnostics or a
//! value, never a crash.

use std::path::Path;

use tocsin_policies::{
    CurrentState, OperatorPublicKey, detect_kind, parse_federation_list, parse_node_policy, plan, verify,
};

/// A small deterministic generator (64-bit LCG).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(self.0 >> 33).unwrap_or(0)
    }
}

const JUNK: &[&str] = &[
    "\"",
    "[",
    "]]",
    "=",
    "\n",
    "#",
    "é",
    "🚒",
    "\\u",
    "0x",
    "-",
    ":",
    "'''",
    "{",
    "}",
    ",",
    "9999999999999999999999",
];

#[test]
fn mangled_examples_do_not_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let key = OperatorPublicKey::from_file(&dir.join("operator.pub")).expect("key");
    let mut rng = Lcg(0x5eed);
    for name in ["federation.toml", "riverton.toml", "lakeside.toml", "county-fire.toml"] {
        let original = std::fs::read_to_string(dir.join(name)).expect("example");
        for _ in 0..400 {
            let mut text = original.clone();
            for _ in 0..1 + rng.next() % 3 {
                let mut at = rng.next() % (text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                match rng.next() % 3 {
                    0 => text.insert_str(at, JUNK[rng.next() % JUNK.len()]),
                    1 => {
                        let mut end = (at + 1 + rng.next() % 8).min(text.len());
                        while !text.is_char_boundary(end) {
                            end += 1;
                        }
                        text.replace_range(at..end, "");
                    }
                    _ => text.truncate(at),
                }
            }
            let _ = detect_kind(&text);
            let _ = parse_federation_list(&text, None).map(|p| p.list.canonical_text());
            let _ = verify(&text, &[key]);
            if let Ok(p) = parse_node_policy(&text, None) {
                let _ = plan(&p.policy, &CurrentState::new("riverton:8448"));
            }
        }
    }
}
