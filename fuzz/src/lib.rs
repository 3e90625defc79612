//! Fuzzing support for Tocsin's tests (a dev-dependency only; stable toolchain).
//!
//! A fuzz target is a function over bytes that must never panic: input from outside gets an
//! error, not a crash. [`run`] feeds it
//!
//! 1. every file of its seed corpus, `fuzz/corpus/<target>/`, as is: real inputs, and inputs
//!    that once crashed (kept as regressions);
//! 2. inputs made by mutating those seeds: bolero generates a byte tape, and the tape picks a
//!    seed and a few structure-aware edits ([`mutate`]: JSON tree edits for `.json` seeds, TOML
//!    tree and text edits for `.toml` seeds, byte edits for anything else).
//!
//! Under `cargo test` a target runs [`TEST_ITERATIONS`] generated inputs. For a longer run,
//! set `BOLERO_RANDOM_TEST_TIME_MS` (a time limit) and raise `BOLERO_RANDOM_ITERATIONS`, as
//! CI's fuzz step does. An input that panics is written to `$TMPDIR/tocsin-fuzz/<target>/`
//! (its path is printed) so it can be added to the corpus once fixed.

mod mutate;
mod tape;

use std::{
    panic::{AssertUnwindSafe, RefUnwindSafe, catch_unwind, resume_unwind},
    path::{Path, PathBuf},
};

pub use mutate::{Format, mutate};
pub use tape::Tape;

/// Generated inputs per target under a plain `cargo test`.
pub const TEST_ITERATIONS: usize = 1500;

/// One file of a seed corpus.
#[derive(Debug, Clone)]
pub struct Seed {
    pub name: String,
    pub bytes: Vec<u8>,
    pub format: Format,
}

/// Where a target's seed corpus lives.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target)
}

/// The seed corpus of a target, sorted by file name. Panics when it is missing or empty: a
/// target without seeds would test nothing.
pub fn seeds(target: &str) -> Vec<Seed> {
    let dir = corpus_dir(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()));
    let mut seeds: Vec<Seed> = entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_name()?.to_str()?.to_owned();
            if !path.is_file() || name.starts_with('.') {
                return None;
            }
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("seed {}: {e}", path.display()));
            let format = Format::of(&name);
            Some(Seed { name, bytes, format })
        })
        .collect();
    seeds.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!seeds.is_empty(), "seed corpus {} is empty", dir.display());
    seeds
}

/// Runs a fuzz target: its seeds as they are, then generated mutations of them. `dict` holds
/// words worth trying in this target's inputs (field names, event types, identifiers).
pub fn run(target: &str, dict: &[&str], check: impl Fn(&[u8]) + RefUnwindSafe) {
    let seeds = seeds(target);
    for seed in &seeds {
        guarded(target, &seed.bytes, &check);
    }
    bolero::check!(name = target).with_iterations(TEST_ITERATIONS).for_each(|tape: &[u8]| {
        let input = mutate(&seeds, dict, &mut Tape::new(tape));
        guarded(target, &input, &check);
    });
}

/// Calls the target, saving the input where it can be found if it panics.
fn guarded(target: &str, input: &[u8], check: &(impl Fn(&[u8]) + RefUnwindSafe)) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(input))) {
        let dir = std::env::temp_dir().join("tocsin-fuzz").join(target);
        let path = dir.join("crash");
        // Shrinking calls again with smaller tapes: the file keeps the latest failing input.
        match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input)) {
            Ok(()) => eprintln!("fuzz target {target} panicked; input saved to {}", path.display()),
            Err(e) => eprintln!("fuzz target {target} panicked; could not save the input: {e}"),
        }
        resume_unwind(panic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_deterministic_and_varied() {
        let seeds = vec![
            Seed { name: "a.json".into(), bytes: br#"{"a":[1,"x",{"b":null}]}"#.to_vec(), format: Format::Json },
            Seed { name: "b.toml".into(), bytes: b"[t]\nk = \"v\"\nn = 3\n".to_vec(), format: Format::Toml },
        ];
        let mut outputs = std::collections::BTreeSet::new();
        for i in 0..200u32 {
            let tape: Vec<u8> = (0..64).map(|j| (i.wrapping_mul(31).wrapping_add(j * 7) % 251) as u8).collect();
            let once = mutate(&seeds, &["key"], &mut Tape::new(&tape));
            let again = mutate(&seeds, &["key"], &mut Tape::new(&tape));
            assert_eq!(once, again);
            outputs.insert(once);
        }
        assert!(outputs.len() > 100, "only {} distinct inputs from 200 tapes", outputs.len());
    }
}
