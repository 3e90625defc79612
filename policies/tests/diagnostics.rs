//! Error messages carry file:line:col and the field path, and all errors are reported.

use std::path::{Path, PathBuf};

use tocsin_policies::{
    OperatorSecretKey, Pos, check_paths, generate_operator_key, parse_federation_list, parse_node_policy, sign_text,
};

fn file() -> Option<&'static Path> {
    Some(Path::new("policies/x.toml"))
}

fn errors_of(text: &str) -> Vec<String> {
    match parse_node_policy(text, file()) {
        Ok(p) => panic!("expected errors, got {:?}", p.policy),
        Err(d) => d.errors().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_syntax_error_has_file_line_and_column() {
    let text = "[[role]]\nname = \"mayor\"\npower_level = 100 100\n";
    let errors = errors_of(text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with("policies/x.toml:3:15: TOML syntax error: string values must be quoted"),
        "{}",
        errors[0]
    );

    let unterminated = "[[room]]\nalias = \"crisis\nname = \"x\"\n";
    let errors = errors_of(unterminated);
    assert!(errors[0].starts_with("policies/x.toml:2:"), "{errors:#?}");
}

#[test]
fn a_schema_error_names_the_field_and_what_was_expected() {
    let text = r#"
[[role]]
name = "staff"
power_level = 50

[[room]]
alias = "a"
name = "A"

[[room]]
alias = "b"
name = "B"

[[room]]
alias = "c"
name = "C"
access_rule = "closed"
"#;
    let errors = errors_of(text);
    assert_eq!(
        errors,
        [
            "policies/x.toml:17:15: room[2].access_rule: expected one of \"restricted\", \"unrestricted\", \"direct\", found \"closed\""
        ]
    );
}

#[test]
fn wrong_types_missing_and_unknown_fields_are_all_reported() {
    let text = r#"[[role]]
name = "mayor"
power_level = 200
may_send_alarms = "yes"

[[account]]
display_name = "No localpart"

[[room]]
alias = "crisis"
name = "Crisis"
encrypted = true
acces_rule = "restricted"

[room_defaults]
retention_max_age = "30 days"
"#;
    let errors = errors_of(text);
    let expected = [
        "policies/x.toml:3:15: role[0].power_level: expected an integer from 0 to 100, found 200",
        "policies/x.toml:4:19: role[0].may_send_alarms: expected a boolean (true or false), found string \"yes\"",
        "policies/x.toml:6:1: account[0].localpart: missing required field",
        "policies/x.toml:13:1: room[0].acces_rule: unknown field \"acces_rule\", did you mean \"access_rule\"?",
        "policies/x.toml:16:21: room_defaults.retention_max_age: expected a duration like \"30d\", \"12h\", \"90m\" or \"1d12h\", found \"30 days\"",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (got, want) in errors.iter().zip(expected) {
        assert!(got.starts_with(want), "got:  {got}\nwant: {want}");
    }
}

#[test]
fn semantic_errors_point_at_the_offending_value() {
    let text = r#"[node]
server_name = "riverton:8448"

[[role]]
name = "mayor"
power_level = 100

[[role]]
name = "mayor"
power_level = 50

[[account]]
localpart = "mayor"
roles = ["mayor", "ghost"]

[[account]]
localpart = "mayor"

[[room]]
alias = "crisis"
name = "Crisis"
members_by_role = ["nobody"]
shared_with = ["lakeside:8449", "bad_host:1", "riverton:8448"]
parent = "missing"
"#;
    let errors = errors_of(text);
    let expected = [
        "policies/x.toml:9:8: role[1].name: duplicate role \"mayor\" (first defined at policies/x.toml:4:1)",
        "policies/x.toml:14:19: account[0].roles[1]: unknown role \"ghost\" (defined: \"mayor\", \"mayor\")",
        "policies/x.toml:17:13: account[1].localpart: duplicate account \"mayor\" (first defined at policies/x.toml:12:1)",
        "policies/x.toml:22:20: room[0].members_by_role[0]: unknown role \"nobody\"",
        "policies/x.toml:23:33: room[0].shared_with[1]: invalid server name \"bad_host:1\"",
        "policies/x.toml:23:47: room[0].shared_with[2]: \"riverton:8448\" is this node itself",
        "policies/x.toml:24:10: room[0].parent: unknown space \"missing\"",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (got, want) in errors.iter().zip(expected) {
        assert!(got.starts_with(want), "got:  {got}\nwant: {want}");
    }
}

#[test]
fn federation_list_errors_are_located_too() {
    let text = r#"[federation]
name = "F"
version = 1
issued = "2025-01-01T00:00:00Z"
expires = "2024-12-31T00:00:00Z"

[[member]]
server_name = "riverton:8448"
agency = "Riverton"
role = "municipality"

[[member]]
server_name = "riverton:8448"
agency = "Riverton again"
role = "municipality"
address = "127.0.0.1"
"#;
    let d = parse_federation_list(text, Some(Path::new("fed.toml"))).expect_err("invalid");
    let errors: Vec<String> = d.errors().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "fed.toml:5:1: federation.expires: expires (2024-12-31T00:00:00Z) must be after issued (2025-01-01T00:00:00Z)",
            "fed.toml:13:15: member[1].server_name: duplicate server name \"riverton:8448\" (first listed at fed.toml:7:1)",
            "fed.toml:16:11: member[1].address: invalid address \"127.0.0.1\": a port is required (host:port)",
        ]
    );
    let bad_time = text.replace("\"2024-12-31T00:00:00Z\"", "\"2024-12-31 00:00:00\"");
    let d = parse_federation_list(&bad_time, Some(Path::new("fed.toml"))).expect_err("invalid");
    assert_eq!(
        d.to_string(),
        "fed.toml:5:11: federation.expires: expected a UTC timestamp like \"2025-06-01T12:00:00Z\", found \"2024-12-31 00:00:00\""
    );
    let bad_role = text.replace("role = \"municipality\"\naddress", "role = \"army\"\naddress");
    let d = parse_federation_list(&bad_role, None).expect_err("invalid");
    assert!(
        d.to_string().starts_with("<input>:15:8: member[1].role: expected one of \"municipality\", \"fire\""),
        "{d}"
    );
}

#[test]
fn shared_with_must_name_federation_members() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (secret, public) = generate_operator_key();
    let secret = OperatorSecretKey::from_text(&secret).expect("key");
    let public = tocsin_policies::OperatorPublicKey::from_text(&public).expect("key");
    let list = r#"[federation]
name = "F"
version = 1
issued = "2025-01-01T00:00:00Z"
expires = "2099-01-01T00:00:00Z"

[[member]]
server_name = "riverton:8448"
agency = "Riverton"
role = "municipality"

[[member]]
server_name = "contractor:8460"
agency = "Pumps Ltd"
role = "external"
"#;
    let list_path = dir.path().join("federation.toml");
    std::fs::write(&list_path, sign_text(list, &secret, None).expect("sign")).expect("write");
    let policy = r#"[node]
server_name = "riverton:8448"

[[room]]
alias = "crisis"
name = "Crisis"
shared_with = ["stranger:8448", "contractor:8460"]
"#;
    let policy_path = dir.path().join("riverton.toml");
    std::fs::write(&policy_path, policy).expect("write");
    let report = check_paths(&[list_path, policy_path.clone()], &[public]);
    let errors: Vec<String> = report.diagnostics.errors().map(ToString::to_string).collect();
    let p = policy_path.display();
    assert_eq!(
        errors,
        [
            format!("{p}:7:16: room[0].shared_with[0]: \"stranger:8448\" is not a member of the federation list \"F\""),
            format!(
                "{p}:7:33: room[0].shared_with[1]: \"contractor:8460\" is an external member (Pumps Ltd), which a \"restricted\" room keeps out"
            ),
        ]
    );
    assert!(report.to_string().ends_with("2 errors, 0 warnings"), "{report}");
}

#[test]
fn check_reports_unsigned_lists_and_unreadable_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("fed.toml");
    std::fs::write(&list, "[federation]\nname = \"F\"\nversion = 1\nissued = \"2025-01-01T00:00:00Z\"\nexpires = \"2099-01-01T00:00:00Z\"\n").expect("write");
    let missing: PathBuf = dir.path().join("missing.toml");
    let report = check_paths(&[list.clone(), missing.clone()], &[]);
    let text = report.to_string();
    assert!(text.contains(&format!("{}: cannot read:", missing.display())), "{text}");
    assert!(text.contains(&format!("{}: signature: the list is not signed", list.display())), "{text}");
    assert!(text.contains("warning: member: the list has no members"), "{text}");
    assert!(!report.is_ok());
}

#[test]
fn positions_count_characters_not_bytes() {
    let text = "[[role]]\nname = \"mäyör\"\npower_level = 10\n";
    let errors = errors_of(text);
    assert!(errors[0].starts_with("policies/x.toml:2:8: role[0].name: \"mäyör\" is not a valid name"), "{errors:#?}");
    assert_eq!(Pos::from_offset("ä\nb", 3), Pos { line: 2, col: 1 });
}
