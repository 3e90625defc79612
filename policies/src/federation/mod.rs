//! The federation list: which servers belong to the federation, as signed by its operator.
//!
//! ```toml
//! [federation]
//! name = "River Valley crisis federation"
//! version = 7                          # must grow with every new list
//! issued = "2025-06-01T00:00:00Z"      # UTC, to the second (a TOML datetime also works)
//! expires = "2025-09-01T00:00:00Z"
//!
//! [[member]]
//! server_name = "riverton:8448"
//! agency = "City of Riverton"
//! role = "municipality"                # municipality fire police ems hospital utility state external
//! address = "127.0.0.1:8448"           # optional pin: connect here, no DNS
//! ca_fingerprint = "ab12..."           # optional: SHA-256 of the CA certificate (or ca_cert = PEM)
//! # Who on this server may raise alarms, by level (localparts; "*" is every user). Absent: nobody.
//! # Other nodes check every received alarm against it.
//! alarm_senders = { critical = ["mayor"], urgent = ["mayor", "duty.officer"] }
//!
//! [signature]                          # written by `policy sign`
//! key_id = "ed25519:0123456789abcdef"
//! ed25519 = "unpadded base64"
//! ```
//!
//! A file is a federation list if it has a top-level `federation`, `member` or `signature` key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::canonical::{write_int, write_str, write_str_list};
use crate::decode::Keyword;
use crate::diagnostics::{Diagnostic, Diagnostics, Origin, Severity};
use crate::names::{check_address, check_localpart, check_server_name};
use crate::node_policy::AlarmLevel;
use crate::pem::{normalise_fingerprint, normalise_pem, pem_certificates, sha256_hex};
use crate::time::Timestamp;

mod parse;

pub(crate) use parse::list_field_pos;
pub use parse::{ParsedList, parse_federation_list, read_federation_list};

/// The first line of the canonical form; it also separates the signing domain.
pub const CANONICAL_HEADER: &str = "# tocsin federation list, canonical form v1\n";

/// What kind of public body a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberRole {
    Municipality,
    Fire,
    Police,
    Ems,
    Hospital,
    Utility,
    State,
    /// Outside the public bodies (contractors, NGOs ...); kept out of `restricted` rooms.
    External,
}

impl Keyword for MemberRole {
    const ALL: &'static [(&'static str, Self)] = &[
        ("municipality", MemberRole::Municipality),
        ("fire", MemberRole::Fire),
        ("police", MemberRole::Police),
        ("ems", MemberRole::Ems),
        ("hospital", MemberRole::Hospital),
        ("utility", MemberRole::Utility),
        ("state", MemberRole::State),
        ("external", MemberRole::External),
    ];
}

impl MemberRole {
    pub fn as_str(self) -> &'static str {
        self.keyword()
    }
}

impl std::fmt::Display for MemberRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One server in the federation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub server_name: String,
    pub agency: String,
    pub role: MemberRole,
    /// `host:port` to connect to instead of resolving the server name.
    pub address: Option<String>,
    /// PEM text of the CA (or CAs) that the member's TLS certificate must chain to.
    pub ca_cert: Option<String>,
    /// SHA-256 of the CA certificate's DER, 64 lower-case hex digits.
    pub ca_fingerprint: Option<String>,
    /// Who on this server may raise alarms of each level: localparts, or `*` for every user.
    /// A level that is absent may not be raised from this server at all.
    pub alarm_senders: BTreeMap<AlarmLevel, Vec<String>>,
    pub origin: Origin,
    /// Where `alarm_senders` was written, for its diagnostics.
    pub alarm_origin: Origin,
}

impl Member {
    pub fn new(server_name: &str, agency: &str, role: MemberRole) -> Self {
        Member {
            server_name: server_name.to_string(),
            agency: agency.to_string(),
            role,
            address: None,
            ca_cert: None,
            ca_fingerprint: None,
            alarm_senders: BTreeMap::new(),
            origin: Origin::default(),
            alarm_origin: Origin::default(),
        }
    }

    /// Whether the user `localpart` of this server may raise an alarm of `level`.
    pub fn may_raise_alarm(&self, localpart: &str, level: AlarmLevel) -> bool {
        self.alarm_senders.get(&level).is_some_and(|who| who.iter().any(|w| w == "*" || w == localpart))
    }

    /// The SHA-256 fingerprints this member's CA may have: the pinned fingerprint if given,
    /// else those of the certificates in `ca_cert`. Empty when neither is given.
    pub fn ca_fingerprints(&self) -> Vec<String> {
        if let Some(fp) = &self.ca_fingerprint {
            return vec![fp.clone()];
        }
        match &self.ca_cert {
            Some(pem) => pem_certificates(pem).unwrap_or_default().iter().map(|d| sha256_hex(d)).collect(),
            None => Vec::new(),
        }
    }
}

/// Whether a list is still within its validity period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStatus {
    Active,
    /// Past `expires`. An expired list that is the active one keeps being enforced (there is
    /// nothing better); the caller raises a warning until a new list arrives.
    Expired {
        since: Timestamp,
    },
}

/// The federation list, without its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationList {
    pub name: String,
    pub version: u64,
    pub issued: Timestamp,
    pub expires: Timestamp,
    pub members: Vec<Member>,
}

/// What changes for each server when a new list replaces the active one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberChanges {
    /// Servers in the new list only.
    pub added: Vec<String>,
    /// Servers in the active list only: refused from the moment the new list is active.
    pub removed: Vec<String>,
    /// Servers in both whose pinned address or CA changed.
    pub repinned: Vec<String>,
}

impl MemberChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.repinned.is_empty()
    }
}

/// The `[signature]` table of a signed list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub key_id: String,
    /// Unpadded standard base64 of the 64-byte ed25519 signature.
    pub ed25519: String,
}

impl FederationList {
    pub fn is_member(&self, server_name: &str) -> bool {
        self.member(server_name).is_some()
    }

    pub fn member(&self, server_name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.server_name == server_name)
    }

    pub fn role_of(&self, server_name: &str) -> Option<MemberRole> {
        self.member(server_name).map(|m| m.role)
    }

    /// Active until `expires` (exclusive), Expired from then on.
    pub fn status(&self, now_unix: i64) -> ListStatus {
        if now_unix < self.expires.unix() { ListStatus::Active } else { ListStatus::Expired { since: self.expires } }
    }

    /// Seconds left before `expires` at `now_unix` (negative once expired).
    pub fn expires_in(&self, now_unix: i64) -> i64 {
        self.expires.unix() - now_unix
    }

    /// Whether the list is still active but expires within `window_secs` of `now_unix`: the
    /// time to warn that a new list is needed.
    pub fn expires_within(&self, now_unix: i64, window_secs: u64) -> bool {
        let left = self.expires_in(now_unix);
        left > 0 && left <= i64::try_from(window_secs).unwrap_or(i64::MAX)
    }

    /// The servers whose membership or pins differ between `self` (the active list) and `new`.
    pub fn changes_to(&self, new: &FederationList) -> MemberChanges {
        let mut changes = MemberChanges::default();
        for m in &new.members {
            match self.member(&m.server_name) {
                None => changes.added.push(m.server_name.clone()),
                Some(old) if old.address != m.address || old.ca_fingerprints() != m.ca_fingerprints() => {
                    changes.repinned.push(m.server_name.clone())
                }
                Some(_) => {}
            }
        }
        for m in &self.members {
            if !new.is_member(&m.server_name) {
                changes.removed.push(m.server_name.clone());
            }
        }
        changes
    }

    /// The exact text that is signed. It is itself valid TOML:
    ///
    /// 1. the line [`CANONICAL_HEADER`];
    /// 2. `[federation]`, then `name`, `version`, `issued`, `expires` in that order;
    /// 3. for each member, sorted by `server_name` (byte order): a blank line, `[[member]]`, then
    ///    `server_name`, `agency`, `role`, and only if present `address`, `ca_cert` (PEM with
    ///    lines trimmed, blank lines dropped, `\n` line ends and a final newline) and
    ///    `ca_fingerprint` (64 lower-case hex digits), then for each alarm level with senders, in the
    ///    order critical, urgent, info, `alarm_senders.<level>` as an array of strings (sorted,
    ///    without duplicates). A list without alarm senders has the same canonical text as before
    ///    the field existed, so its signature stays valid.
    ///
    /// Each line is `key = value` ending in `\n`; strings follow [`crate::canonical`], integers
    /// are decimal, timestamps are strings `YYYY-MM-DDTHH:MM:SSZ`. Comments, whitespace, key
    /// order and member order in the source file therefore do not matter; every value does.
    pub fn canonical_text(&self) -> String {
        let mut out = String::from(CANONICAL_HEADER);
        out.push_str("[federation]\n");
        write_str(&mut out, "name", &self.name);
        write_int(&mut out, "version", self.version);
        write_str(&mut out, "issued", &self.issued.to_string());
        write_str(&mut out, "expires", &self.expires.to_string());
        let mut members: Vec<&Member> = self.members.iter().collect();
        members.sort_by(|a, b| a.server_name.cmp(&b.server_name));
        for m in members {
            out.push_str("\n[[member]]\n");
            write_str(&mut out, "server_name", &m.server_name);
            write_str(&mut out, "agency", &m.agency);
            write_str(&mut out, "role", m.role.as_str());
            if let Some(a) = &m.address {
                write_str(&mut out, "address", a);
            }
            if let Some(pem) = &m.ca_cert {
                write_str(&mut out, "ca_cert", &normalise_pem(pem));
            }
            if let Some(fp) = &m.ca_fingerprint {
                let fp = normalise_fingerprint(fp).unwrap_or_else(|_| fp.clone());
                write_str(&mut out, "ca_fingerprint", &fp);
            }
            for (level, who) in &m.alarm_senders {
                let mut who = who.clone();
                who.sort();
                who.dedup();
                if !who.is_empty() {
                    write_str_list(&mut out, &format!("alarm_senders.{level}"), &who);
                }
            }
        }
        out
    }

    /// Semantic checks on a list (also run by the parser): a name, a version of at least 1,
    /// `expires` after `issued`, valid and unique server names, valid pins.
    pub fn validate(&self) -> Diagnostics {
        let mut d = Diagnostics::default();
        let root = Origin::default();
        if self.name.trim().is_empty() {
            d.push(root.diag(Severity::Error, "name", "federation.name".into(), "must not be empty".into()));
        }
        if self.version == 0 {
            d.push(root.diag(Severity::Error, "version", "federation.version".into(), "must be at least 1".into()));
        }
        if self.expires <= self.issued {
            let message = format!("expires ({}) must be after issued ({})", self.expires, self.issued);
            d.push(root.diag(Severity::Error, "expires", "federation.expires".into(), message));
        }
        if self.members.is_empty() {
            let message = "the list has no members; every server would be refused".to_string();
            d.push(root.diag(Severity::Warning, "", "member".into(), message));
        }
        let mut seen: BTreeMap<&str, &Member> = BTreeMap::new();
        for (i, m) in self.members.iter().enumerate() {
            validate_member(m, i, &mut d);
            if let Some(first) = seen.get(m.server_name.as_str()) {
                let message =
                    format!("duplicate server name {:?} (first listed at {})", m.server_name, first.origin.describe());
                d.push(m.origin.diag(Severity::Error, "server_name", format!("member[{i}].server_name"), message));
            } else {
                seen.insert(&m.server_name, m);
            }
        }
        d
    }
}

fn validate_member(m: &Member, i: usize, d: &mut Diagnostics) {
    let path = |f: &str| format!("member[{i}].{f}");
    let mut error = |field: &str, message: String| {
        d.push(m.origin.diag(Severity::Error, field, path(field), message));
    };
    if let Err(e) = check_server_name(&m.server_name) {
        error("server_name", format!("invalid server name {:?}: {e}", m.server_name));
    }
    if m.agency.trim().is_empty() {
        error("agency", "must not be empty".into());
    }
    if let Some(a) = &m.address
        && let Err(e) = check_address(a)
    {
        error("address", format!("invalid address {a:?}: {e}"));
    }
    let mut cert_fps = None;
    if let Some(pem) = &m.ca_cert {
        match pem_certificates(pem) {
            Ok(ders) => cert_fps = Some(ders.iter().map(|d| sha256_hex(d)).collect::<Vec<_>>()),
            Err(e) => error("ca_cert", e),
        }
    }
    if let Some(fp) = &m.ca_fingerprint {
        match normalise_fingerprint(fp) {
            Ok(fp) => {
                if let Some(fps) = cert_fps
                    && !fps.contains(&fp)
                {
                    error("ca_fingerprint", "does not match any certificate in ca_cert".into());
                }
            }
            Err(e) => error("ca_fingerprint", e),
        }
    }
    for (level, who) in &m.alarm_senders {
        for (j, localpart) in who.iter().enumerate() {
            if localpart == "*" {
                continue;
            }
            if let Err(e) = check_localpart(localpart) {
                let field = format!("{level}[{j}]");
                let message =
                    format!("invalid localpart {localpart:?}: {e} (write a localpart, or \"*\" for every user)");
                d.push(m.alarm_origin.diag(Severity::Error, &field, path(&format!("alarm_senders.{field}")), message));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\r\n  MAMBAgM=\r\n-----END CERTIFICATE-----";

    fn list_with(member_extra: &str) -> String {
        format!(
            "[federation]\nname = \"F\"\nversion = 1\nissued = 2025-01-01T00:00:00Z\nexpires = 2025-02-01T00:00:00Z\n\n\
             [[member]]\nserver_name = \"[::1]:8448\"\nagency = \"A\"\nrole = \"state\"\n{member_extra}"
        )
    }

    #[test]
    fn ca_cert_and_fingerprint_must_agree() {
        let fp = sha256_hex(&[0x30, 3, 1, 2, 3]);
        let ok = list_with(&format!("ca_cert = {:?}\nca_fingerprint = {fp:?}\n", PEM));
        let parsed = parse_federation_list(&ok, None).expect("valid");
        let member = &parsed.list.members[0];
        // The PEM is normalised, so line-end changes do not alter the signed content.
        assert_eq!(
            member.ca_cert.as_deref(),
            Some("-----BEGIN CERTIFICATE-----\nMAMBAgM=\n-----END CERTIFICATE-----\n")
        );
        assert_eq!(member.ca_fingerprints(), vec![fp.clone()]);

        let wrong = list_with(&format!("ca_cert = {:?}\nca_fingerprint = {:?}\n", PEM, "00".repeat(32)));
        let d = parse_federation_list(&wrong, None).expect_err("mismatch");
        assert_eq!(d.to_string(), "<input>:12:18: member[0].ca_fingerprint: does not match any certificate in ca_cert");
        let only_cert = list_with(&format!("ca_cert = {:?}\n", PEM));
        let parsed = parse_federation_list(&only_cert, None).expect("valid");
        assert_eq!(parsed.list.members[0].ca_fingerprints(), vec![fp]);
    }

    #[test]
    fn alarm_senders_are_signed_checked_and_located() {
        let plain = parse_federation_list(&list_with(""), None).expect("valid").list;
        let text = list_with("alarm_senders = { critical = [\"mayor\"], info = [\"*\", \"mayor\", \"mayor\"] }\n");
        let list = parse_federation_list(&text, None).expect("valid").list;
        let m = &list.members[0];
        assert!(m.may_raise_alarm("mayor", AlarmLevel::Critical));
        assert!(!m.may_raise_alarm("clerk", AlarmLevel::Critical));
        assert!(m.may_raise_alarm("clerk", AlarmLevel::Info), "* is every user");
        assert!(!m.may_raise_alarm("mayor", AlarmLevel::Urgent), "an absent level is nobody");
        let canonical = list.canonical_text();
        assert!(
            canonical.ends_with("alarm_senders.critical = [\"mayor\"]\nalarm_senders.info = [\"*\", \"mayor\"]\n"),
            "{canonical}"
        );
        // The canonical form is itself TOML, and a list without senders signs as before.
        assert!(canonical.parse::<toml::Table>().is_ok());
        assert!(!plain.canonical_text().contains("alarm_senders"));

        let bad = list_with("alarm_senders = { urgent = [\"ok\"], loud = [] }\n");
        let d = parse_federation_list(&bad, None).expect_err("bad level").to_string();
        assert!(d.starts_with("<input>:11:36: member[0].alarm_senders.loud: unknown field \"loud\""), "{d}");
        let bad = list_with("alarm_senders = { urgent = [\"ok\", \"Not Valid\"] }\n");
        let d = parse_federation_list(&bad, None).expect_err("bad localpart").to_string();
        assert!(d.starts_with("<input>:11:35: member[0].alarm_senders.urgent[1]: invalid localpart"), "{d}");
    }

    #[test]
    fn datetime_literals_must_be_utc() {
        let local = list_with("").replace("issued = 2025-01-01T00:00:00Z", "issued = 2025-01-01T00:00:00");
        let d = parse_federation_list(&local, None).expect_err("local time");
        assert!(d.to_string().contains("federation.issued: expected a UTC timestamp"), "{d}");
    }

    #[test]
    fn expiry_window_and_member_changes() {
        let list = parse_federation_list(&list_with(""), None).expect("valid").list;
        let expires = list.expires.unix();
        let week: u64 = 7 * 24 * 3600;
        let week_i = 7 * 24 * 3600;
        assert!(!list.expires_within(expires - week_i - 1, week));
        assert!(list.expires_within(expires - week_i, week));
        assert!(list.expires_within(expires - 1, week));
        assert!(!list.expires_within(expires, week), "an expired list is past the window");
        assert_eq!(list.expires_in(expires - 5), 5);

        let mut new = list.clone();
        assert!(list.changes_to(&new).is_empty());
        new.members.push(Member::new("b.test", "B", MemberRole::Fire));
        new.members[0].address = Some("127.0.0.1:9".into());
        let changes = list.changes_to(&new);
        assert_eq!(changes.added, vec!["b.test".to_string()]);
        assert_eq!(changes.repinned, vec!["[::1]:8448".to_string()]);
        assert!(changes.removed.is_empty());
        let back = new.changes_to(&list);
        assert_eq!(back.removed, vec!["b.test".to_string()]);
        assert!(back.added.is_empty());
    }

    #[test]
    fn status_changes_at_expiry() {
        let list = parse_federation_list(&list_with(""), None).expect("valid").list;
        let expires = list.expires.unix();
        assert_eq!(list.status(expires - 1), ListStatus::Active);
        assert_eq!(list.status(expires), ListStatus::Expired { since: list.expires });
    }
}
