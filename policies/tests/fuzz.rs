//! Fuzz targets for policy files and the federation list (see the `tocsin-fuzz` crate): the
//! TOML parsers, the validators, the signed-list verification and the planner must answer any
//! input with a value or diagnostics, never a panic. Where a result can be checked against
//! another path, it is:
//! - a valid list's canonical form parses back to the same canonical form;
//! - a list this code signs verifies with the matching key;
//! - applying a valid policy's plan and planning again yields nothing.
//!
//! Seeds: `fuzz/corpus/federation_list/` and `fuzz/corpus/node_policy/`.

use std::path::Path;

use tocsin_policies::{
    AlarmLevel, CurrentState, OperatorPublicKey, OperatorSecretKey, ParsedList, Timestamp, accept_update, conflicts,
    detect_kind, names, parse_duration, parse_federation_list, parse_node_policy, parse_rfc3339_utc, pem, plan,
    sign_list, sign_text, verify,
};

const NOW: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

const LIST_WORDS: &[&str] = &[
    "federation",
    "member",
    "signature",
    "name",
    "version",
    "issued",
    "expires",
    "server_name",
    "agency",
    "role",
    "address",
    "ca_cert",
    "ca_fingerprint",
    "key_id",
    "ed25519",
    "municipality",
    "fire",
    "external",
    "127.0.0.1:8448",
    "[::1]:8448",
    "riverton:8448",
    "-----BEGIN CERTIFICATE-----\nMAMBAgM=\n-----END CERTIFICATE-----",
    "ed25519:6760647b9dd199b5",
];

const POLICY_WORDS: &[&str] = &[
    "node",
    "server_name",
    "room_defaults",
    "encryption",
    "history_visibility",
    "guest_access",
    "access_rule",
    "retention_max_age",
    "alarms",
    "senders",
    "ack_deadline",
    "escalation_room",
    "ring_in_muted_rooms",
    "external_users",
    "allowed",
    "may_invite",
    "max_per_room",
    "role",
    "power_level",
    "may_send_alarms",
    "alarm_levels",
    "account",
    "localpart",
    "display_name",
    "roles",
    "password",
    "password_hash",
    "admin",
    "room",
    "alias",
    "topic",
    "kind",
    "space",
    "members_by_role",
    "members",
    "remote_members",
    "shared_with",
    "parent",
    "restricted",
    "open",
    "shared",
    "invited",
    "joined",
    "world_readable",
    "critical",
    "urgent",
    "info",
    "mayor",
    "crisis-staff",
    "@crisis.lead:riverton:8448",
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
    "90d",
    "10m",
];

fn examples() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
}

fn keys() -> (OperatorSecretKey, OperatorPublicKey) {
    let secret = OperatorSecretKey::from_file(&examples().join("demo-operator.key")).expect("demo key");
    let public = OperatorPublicKey::from_file(&examples().join("operator.pub")).expect("operator key");
    (secret, public)
}

fn example_list() -> ParsedList {
    let text = std::fs::read_to_string(examples().join("federation.toml")).expect("example list");
    parse_federation_list(&text, None).expect("the example list is valid")
}

/// Parsers of single values that policy files and key files are made of.
fn values(text: &str) {
    for line in text.lines().take(64).chain([text]) {
        let line = line.trim();
        let _ = parse_duration(line).map(tocsin_policies::format_duration);
        let _ = parse_rfc3339_utc(line);
        let _ = Timestamp::parse(line).map(|t| t.to_string());
        let _ = names::check_server_name(line);
        let _ = names::check_address(line);
        let _ = names::check_localpart(line);
        let _ = names::check_alias(line);
        let _ = names::check_identifier(line);
        let _ = pem::normalise_fingerprint(line);
    }
    let _ = pem::pem_certificates(text);
    let _ = pem::normalise_pem(text);
    let _ = OperatorPublicKey::from_text(text);
    let _ = OperatorSecretKey::from_text(text);
}

#[test]
fn fuzz_federation_list() {
    let (secret, public) = keys();
    let example = example_list();
    let active = verify(&std::fs::read_to_string(examples().join("federation.toml")).unwrap(), &[public])
        .expect("the example list verifies");
    tocsin_fuzz::run("federation_list", LIST_WORDS, |bytes| {
        // Files are read as UTF-8; anything else is refused before parsing.
        let Ok(text) = std::str::from_utf8(bytes) else { return };
        values(text);
        let _ = detect_kind(text);
        match parse_federation_list(text, Some(Path::new("list.toml"))) {
            Ok(parsed) => {
                let list = &parsed.list;
                let canonical = list.canonical_text();
                match parse_federation_list(&canonical, None) {
                    // Members come out sorted: the canonical form is a fixed point, not a copy.
                    Ok(again) => assert_eq!(again.list.canonical_text(), canonical, "the canonical form is stable"),
                    Err(d) => panic!("the canonical form of a valid list does not parse:\n{d}\n{canonical}"),
                }
                // `now` comes from the clock, not from the file: any time a clock may show.
                for now in [0, NOW, 253_402_300_799] {
                    let _ = list.status(now);
                    let _ = list.expires_in(now);
                    let _ = list.expires_within(now, u64::MAX);
                    let _ = list.expires_within(now, 3600);
                }
                let _ = list.changes_to(&example.list);
                let _ = example.list.changes_to(list);
                for m in &list.members {
                    let _ = (list.is_member(&m.server_name), list.role_of(&m.server_name), m.ca_fingerprints());
                }
                let _ = parsed.warnings.to_string();
                let signed = sign_list(list, &secret).expect("a valid list can be signed");
                let verified = verify(&signed.to_toml(), &[public]).expect("a list signed here verifies");
                assert_eq!(verified.list().canonical_text(), canonical);
            }
            Err(diagnostics) => {
                let _ = diagnostics.to_string();
            }
        }
        match verify(text, &[public]) {
            Ok(new) => {
                let _ = accept_update(Some(&active), new.clone(), NOW).map_err(|e| e.to_string());
                let _ = accept_update(None, new, 253_402_300_799).map_err(|e| e.to_string());
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        if let Ok(signed) = sign_text(text, &secret, None) {
            let verified = match verify(&signed, &[public]) {
                Ok(v) => v,
                Err(e) => panic!("a list signed here does not verify: {e}\n{signed}"),
            };
            let original = parse_federation_list(text, None).expect("sign_text signs valid lists only");
            let (signed, original) = (verified.list().canonical_text(), original.list.canonical_text());
            assert_eq!(signed, original, "signing keeps the list's values");
        }
    });
}

#[test]
fn fuzz_node_policy() {
    let federation = example_list();
    tocsin_fuzz::run("node_policy", POLICY_WORDS, |bytes| {
        let Ok(text) = std::str::from_utf8(bytes) else { return };
        values(text);
        let _ = detect_kind(text);
        let parsed = match parse_node_policy(text, Some(Path::new("policy.toml"))) {
            Ok(parsed) => parsed,
            Err(diagnostics) => {
                let _ = diagnostics.to_string();
                return;
            }
        };
        let policy = &parsed.policy;
        let _ = policy.validate(Some(&federation.list)).to_string();
        for account in &policy.accounts {
            let _ = policy.power_level_of(&account.localpart);
            for level in [AlarmLevel::Critical, AlarmLevel::Urgent, AlarmLevel::Info] {
                let _ = policy.may_send_alarm(&account.localpart, level);
            }
        }
        for room in &policy.rooms {
            let _ = (policy.members_of(room), policy.encrypted(room), policy.access_rule(room));
            let _ = policy.history_visibility(room);
        }
        let server_name = policy.node.server_name.clone().unwrap_or_else(|| "riverton:8448".to_owned());
        let mut state = CurrentState::new(&server_name);
        let changes = plan(policy, &state);
        for change in &changes {
            let _ = change.to_string();
            state.apply(change);
        }
        let again = plan(policy, &state);
        assert!(again.is_empty(), "applying the plan and planning again yields nothing, got {again:?}");
        let _ = conflicts(policy, &state);
    });
}
