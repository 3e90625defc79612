//! Reading node policies from text, files and folders, and merging folders.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::NodePolicy;
use crate::decode::{Obj, Reader};
use crate::diagnostics::{Diagnostic, Diagnostics, Origin, Severity};
use crate::error::PolicyError;
use crate::federation::FederationList;

/// A node policy that passed validation, with its warnings.
#[derive(Debug, Clone)]
pub struct ParsedPolicy {
    pub policy: NodePolicy,
    pub warnings: Diagnostics,
    /// The files it was read from (empty when parsed from text without a path).
    pub files: Vec<PathBuf>,
}

/// Decodes one file's text (syntax and schema only).
pub(crate) fn decode_fragment(text: &str, file: Option<&Path>) -> (NodePolicy, Vec<Diagnostic>) {
    let mut r = Reader::new(text, file.map(|f| Arc::new(f.to_path_buf())));
    let Some(doc) = r.parse() else {
        return (NodePolicy::default(), r.diags);
    };
    let mut root = Obj::new(&r, doc.get_ref(), doc.span(), String::new());
    let policy = super::decode::decode(&mut r, &mut root);
    root.finish(&mut r);
    (policy, r.diags)
}

/// Merges fragments (one per file) into one policy. Lists are concatenated (duplicates are
/// found by validation, which names both places); a singleton table (`[node]`,
/// `[room_defaults]`, `[alarms]`, `[external_users]`, `[bridge]`) defined in two files is an error.
pub(crate) fn merge(fragments: Vec<NodePolicy>) -> (NodePolicy, Vec<Diagnostic>) {
    let mut out = NodePolicy::default();
    let mut diags = Vec::new();
    for f in fragments {
        out.accounts.extend(f.accounts);
        out.roles.extend(f.roles);
        out.rooms.extend(f.rooms);
        if take(&out.node.origin, &f.node.origin, "node", &mut diags) {
            out.node = f.node;
        }
        if take(&out.room_defaults.origin, &f.room_defaults.origin, "room_defaults", &mut diags) {
            out.room_defaults = f.room_defaults;
        }
        if take(&out.alarms.origin, &f.alarms.origin, "alarms", &mut diags) {
            out.alarms = f.alarms;
        }
        if take(&out.bridge.origin, &f.bridge.origin, "bridge", &mut diags) {
            out.bridge = f.bridge;
        }
        if take(&out.external_users.origin, &f.external_users.origin, "external_users", &mut diags) {
            out.external_users = f.external_users;
        }
    }
    (out, diags)
}

/// Whether a singleton table from a new file should be taken: it must be defined there
/// (have a position) and not already be defined elsewhere (that is reported).
fn take(existing: &Origin, new: &Origin, name: &str, diags: &mut Vec<Diagnostic>) -> bool {
    if new.pos.is_none() {
        return false;
    }
    if existing.pos.is_some() {
        let mut message =
            format!("[{name}] is defined twice: in {} and again in {}", existing.describe(), new.describe());
        if name == "node" {
            message.push_str(" (the files of a folder are merged into one node's policy; give the policies of different nodes as separate files)");
        }
        diags.push(new.diag(Severity::Error, "", name.to_string(), message));
        return false;
    }
    true
}

/// Validates a decoded policy and splits the result into success (with warnings) or errors.
pub(crate) fn conclude(
    policy: NodePolicy,
    mut diags: Vec<Diagnostic>,
    federation: Option<&FederationList>,
    files: Vec<PathBuf>,
) -> Result<ParsedPolicy, Diagnostics> {
    // Semantic checks on a partly read policy would report spurious follow-up errors.
    if !diags.iter().any(Diagnostic::is_error) {
        diags.extend(policy.validate(federation));
    }
    let mut diags = Diagnostics(diags);
    diags.sort();
    if diags.has_errors() {
        return Err(diags);
    }
    Ok(ParsedPolicy { policy, warnings: diags, files })
}

/// Parses and validates one node policy file's text.
pub fn parse_node_policy(text: &str, file: Option<&Path>) -> Result<ParsedPolicy, Diagnostics> {
    let (policy, diags) = decode_fragment(text, file);
    let files = file.map(|f| vec![f.to_path_buf()]).unwrap_or_default();
    conclude(policy, diags, None, files)
}

/// Reads a node policy from a file, or from a folder whose `*.toml` files are merged (in file
/// name order, not recursing). Federation lists found in the folder are skipped.
pub fn read_node_policy(path: &Path) -> Result<ParsedPolicy, PolicyError> {
    let files = if path.is_dir() { policy_files_in(path)? } else { vec![path.to_path_buf()] };
    read_node_policy_files(&files)
}

/// Reads the given files and merges them into one node policy.
pub fn read_node_policy_files(files: &[PathBuf]) -> Result<ParsedPolicy, PolicyError> {
    let mut fragments = Vec::new();
    let mut diags = Vec::new();
    for file in files {
        let text = read(file)?;
        let (fragment, d) = decode_fragment(&text, Some(file));
        fragments.push(fragment);
        diags.extend(d);
    }
    let (policy, merge_diags) = merge(fragments);
    diags.extend(merge_diags);
    conclude(policy, diags, None, files.to_vec()).map_err(PolicyError::Invalid)
}

/// The `*.toml` files of a folder that are node policies (not federation lists), sorted.
pub(crate) fn policy_files_in(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let mut out = Vec::new();
    for file in toml_files_in(dir)? {
        let text = read(&file)?;
        if crate::check::detect_kind(&text) != crate::check::FileKind::FederationList {
            out.push(file);
        }
    }
    Ok(out)
}

/// The `*.toml` files directly inside a folder, sorted by name.
pub(crate) fn toml_files_in(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let io = |source| PolicyError::Io { path: dir.to_path_buf(), source };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn read(path: &Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path).map_err(|source| PolicyError::Io { path: path.to_path_buf(), source })
}
