//! `policy check`: validate federation lists and node policies from paths.
//!
//! Each path is a file or a folder:
//!
//! - A file is a **federation list** if its top level has a `federation`, `member` or
//!   `signature` key, and a **node policy** otherwise. Each node policy file given directly is
//!   checked on its own (as one node's whole policy).
//! - In a folder (not recursing), the federation lists among its `*.toml` files are checked on
//!   their own, and all other `*.toml` files are merged into one node policy.
//!
//! Federation lists are verified against the pinned keys (an unsigned list or a bad signature
//! is an error; no pinned key is a warning). Node policies are then checked against the list
//! with the highest version among those given: `shared_with` and `[node] server_name` must be
//! members. When several nodes' policies are checked together, a room's `remote_members` on
//! one of those nodes must be accounts in that node's policy.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::diagnostics::{Diagnostic, Diagnostics, Severity};
use crate::federation::{FederationList, ListStatus, list_field_pos, parse_federation_list};
use crate::node_policy::ParsedPolicy;
use crate::node_policy::load::{conclude, decode_fragment, merge, read, toml_files_in};
use crate::node_policy::validate::split_user_id;
use crate::signing::{OperatorPublicKey, verify_parsed};

/// What a policy file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    FederationList,
    NodePolicy,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::FederationList => "federation list",
            FileKind::NodePolicy => "node policy",
        })
    }
}

const LIST_KEYS: &[&str] = &["federation", "member", "signature"];

/// Decides a file's kind from its top-level keys (falling back to its table headers when the
/// TOML does not parse).
pub fn detect_kind(text: &str) -> FileKind {
    let (doc, _) = toml::de::DeTable::parse_recoverable(text);
    let by_keys = doc.get_ref().iter().any(|(k, _)| LIST_KEYS.contains(&k.get_ref().as_ref()));
    let by_headers = text
        .lines()
        .map(str::trim)
        .any(|l| l.starts_with("[federation]") || l.starts_with("[[member]]") || l.starts_with("[signature]"));
    if by_keys || by_headers { FileKind::FederationList } else { FileKind::NodePolicy }
}

/// One file that was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedFile {
    pub path: PathBuf,
    pub kind: FileKind,
}

/// The outcome of [`check_paths`].
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub files: Vec<CheckedFile>,
    pub diagnostics: Diagnostics,
}

impl Report {
    /// True when there is no error (warnings are allowed).
    pub fn is_ok(&self) -> bool {
        !self.diagnostics.has_errors()
    }

    pub fn error_count(&self) -> usize {
        self.diagnostics.errors().count()
    }

    pub fn warning_count(&self) -> usize {
        self.diagnostics.warnings().count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.diagnostics {
            writeln!(f, "{d}")?;
        }
        let lists = self.files.iter().filter(|c| c.kind == FileKind::FederationList).count();
        let policies = self.files.len() - lists;
        let plural = |n: usize, s: &str| {
            if n == 1 { format!("{n} {s}") } else { format!("{n} {s}s") }
        };
        write!(
            f,
            "checked {} ({}, {}): {}, {}",
            plural(self.files.len(), "file"),
            plural(lists, "federation list"),
            plural(policies, "node policy file"),
            plural(self.error_count(), "error"),
            plural(self.warning_count(), "warning"),
        )
    }
}

/// Checks files and folders at the current time; see the module documentation.
pub fn check_paths(paths: &[PathBuf], pinned_keys: &[OperatorPublicKey]) -> Report {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    check_paths_at(paths, pinned_keys, now)
}

/// [`check_paths`] at a given unix time (for expiry warnings).
pub fn check_paths_at(paths: &[PathBuf], pinned_keys: &[OperatorPublicKey], now_unix: i64) -> Report {
    let mut report = Report::default();
    // (path, text) of lists; groups of (path, text) forming one node policy each.
    let mut lists: Vec<(PathBuf, String)> = Vec::new();
    let mut policies: Vec<Vec<(PathBuf, String)>> = Vec::new();

    for path in paths {
        if path.is_dir() {
            let files = match toml_files_in(path) {
                Ok(f) => f,
                Err(e) => {
                    report.diagnostics.push(Diagnostic::error(Some(path), None, "", e.to_string()));
                    continue;
                }
            };
            let mut group = Vec::new();
            let file_count = files.len();
            for file in files {
                match read(&file) {
                    Ok(text) if detect_kind(&text) == FileKind::FederationList => lists.push((file, text)),
                    Ok(text) => group.push((file, text)),
                    Err(e) => report.diagnostics.push(io_diag(&file, &e)),
                }
            }
            if file_count == 0 {
                let message = "the folder holds no *.toml files".to_string();
                report.diagnostics.push(Diagnostic::warning(Some(path), None, "", message));
            }
            if !group.is_empty() {
                policies.push(group);
            }
        } else {
            match read(path) {
                Ok(text) if detect_kind(&text) == FileKind::FederationList => lists.push((path.clone(), text)),
                Ok(text) => policies.push(vec![(path.clone(), text)]),
                Err(e) => report.diagnostics.push(io_diag(path, &e)),
            }
        }
    }

    let mut newest: Option<FederationList> = None;
    for (path, text) in &lists {
        report.files.push(CheckedFile { path: path.clone(), kind: FileKind::FederationList });
        if let Some(list) = check_list(path, text, pinned_keys, now_unix, &mut report.diagnostics)
            && newest.as_ref().is_none_or(|n| list.version > n.version)
        {
            newest = Some(list);
        }
    }

    let mut checked: Vec<ParsedPolicy> = Vec::new();
    for group in policies {
        let mut fragments = Vec::new();
        let mut diags = Vec::new();
        for (path, text) in &group {
            report.files.push(CheckedFile { path: path.clone(), kind: FileKind::NodePolicy });
            let (fragment, d) = decode_fragment(text, Some(path));
            fragments.push(fragment);
            diags.extend(d);
        }
        let (policy, merge_diags) = merge(fragments);
        diags.extend(merge_diags);
        let files = group.into_iter().map(|(p, _)| p).collect();
        match conclude(policy, diags, newest.as_ref(), files) {
            Ok(parsed) => {
                report.diagnostics.extend(parsed.warnings.clone());
                checked.push(parsed);
            }
            Err(d) => report.diagnostics.extend(d),
        }
    }
    cross_check_remote_members(&checked, &mut report.diagnostics);
    report
}

/// When the policies of several nodes are checked together, a room's `remote_members` on one
/// of those nodes must be accounts in that node's policy.
fn cross_check_remote_members(policies: &[ParsedPolicy], out: &mut Diagnostics) {
    let by_server: BTreeMap<&str, &ParsedPolicy> =
        policies.iter().filter_map(|p| p.policy.node.server_name.as_deref().map(|s| (s, p))).collect();
    for parsed in policies {
        for (i, room) in parsed.policy.rooms.iter().enumerate() {
            for (j, user_id) in room.remote_members.iter().enumerate() {
                let Some((localpart, server)) = split_user_id(user_id) else {
                    continue;
                };
                let Some(other) = by_server.get(server) else {
                    continue;
                };
                if other.policy.account(localpart).is_none() {
                    let files: Vec<String> = other.files.iter().map(|f| f.display().to_string()).collect();
                    let message =
                        format!("{user_id:?} is not an account in the policy of {server} ({})", files.join(", "));
                    let field = format!("remote_members[{j}]");
                    out.push(room.origin.diag(Severity::Error, &field, format!("room[{i}].{field}"), message));
                }
            }
        }
    }
}

fn io_diag(path: &Path, e: &crate::PolicyError) -> Diagnostic {
    let message = match e {
        crate::PolicyError::Io { source, .. } => format!("cannot read: {source}"),
        other => other.to_string(),
    };
    Diagnostic::error(Some(path), None, "", message)
}

/// Parses, verifies and dates one list; returns its content if it parsed.
fn check_list(
    path: &Path,
    text: &str,
    pinned: &[OperatorPublicKey],
    now_unix: i64,
    out: &mut Diagnostics,
) -> Option<FederationList> {
    let parsed = match parse_federation_list(text, Some(path)) {
        Ok(p) => p,
        Err(d) => {
            out.extend(d);
            return None;
        }
    };
    out.extend(parsed.warnings.clone());
    if pinned.is_empty() {
        let message = match &parsed.signature {
            Some(sig) => format!("signature by {} not checked: no operator public key was given", sig.key_id),
            None => "the list is not signed; a node refuses unsigned lists".to_string(),
        };
        let pos = signature_pos(text);
        out.push(Diagnostic {
            severity: if parsed.signature.is_some() { Severity::Warning } else { Severity::Error },
            file: Some(path.to_path_buf()),
            pos,
            path: "signature".to_string(),
            message,
        });
    } else if let Err(e) = verify_parsed(&parsed, pinned) {
        out.push(Diagnostic::error(Some(path), signature_pos(text), "signature", e.to_string()));
    }
    if let ListStatus::Expired { since } = parsed.list.status(now_unix) {
        let message = format!(
            "version {} expired at {since}; a node keeps enforcing it but warns until a new list arrives",
            parsed.list.version
        );
        let pos = list_field_pos(text, "federation.expires");
        out.push(Diagnostic::warning(Some(path), pos, "federation.expires", message));
    }
    Some(parsed.list)
}

fn signature_pos(text: &str) -> Option<crate::Pos> {
    text.find("[signature]").map(|o| crate::Pos::from_offset(text, o))
}
