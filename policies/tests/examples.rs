//! The committed examples pass `policy check`, and their plans converge.

use std::path::{Path, PathBuf};

use tocsin_policies::{
    CurrentState, FileKind, OperatorPublicKey, OperatorSecretKey, Timestamp, check_paths, check_paths_at,
    parse_node_policy, plan, verify_file,
};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn example_files() -> Vec<PathBuf> {
    ["federation.toml", "riverton.toml", "lakeside.toml", "county-fire.toml"]
        .iter()
        .map(|f| examples().join(f))
        .collect()
}

fn operator_key() -> OperatorPublicKey {
    OperatorPublicKey::from_file(&examples().join("operator.pub")).expect("operator.pub")
}

#[test]
fn every_example_passes_check() {
    let report = check_paths(&example_files(), &[operator_key()]);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.warning_count(), 0, "{report}");
    let kinds: Vec<FileKind> = report.files.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FileKind::FederationList, FileKind::NodePolicy, FileKind::NodePolicy, FileKind::NodePolicy]);
    assert!(report.to_string().ends_with("0 errors, 0 warnings"), "{report}");
}

#[test]
fn an_expired_list_is_a_warning_not_an_error() {
    let later = Timestamp::parse("2031-01-01T00:00:00Z").expect("time").unix();
    let report = check_paths_at(&example_files(), &[operator_key()], later);
    assert!(report.is_ok(), "{report}");
    let warnings: Vec<String> = report.diagnostics.warnings().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 1, "{report}");
    assert!(
        warnings[0].ends_with(
            "federation.toml:16:1: warning: federation.expires: version 2 expired at 2030-01-01T00:00:00Z; \
             a node keeps enforcing it but warns until a new list arrives"
        ),
        "{}",
        warnings[0]
    );
}

#[test]
fn without_a_pinned_key_the_signature_is_not_checked() {
    let report = check_paths(&example_files(), &[]);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.warning_count(), 1, "{report}");
    assert!(report.to_string().contains("not checked: no operator public key was given"));
}

#[test]
fn each_example_also_passes_alone() {
    for file in example_files() {
        let report = check_paths(std::slice::from_ref(&file), &[operator_key()]);
        assert!(report.is_ok(), "{}: {report}", file.display());
    }
}

#[test]
fn the_demo_key_matches_the_pinned_key() {
    let secret = OperatorSecretKey::from_file(&examples().join("demo-operator.key")).expect("demo key");
    assert_eq!(secret.public_key(), operator_key());
    let list = verify_file(&examples().join("federation.toml"), &[operator_key()]).expect("verified");
    assert_eq!(list.members.len(), 3);
    assert_eq!(list.member("county-fire:8450").and_then(|m| m.address.as_deref()), Some("127.0.0.1:8450"));
}

#[test]
fn example_plans_converge() {
    for (file, server) in [
        ("riverton.toml", "riverton:8448"),
        ("lakeside.toml", "lakeside:8449"),
        ("county-fire.toml", "county-fire:8450"),
    ] {
        let path = examples().join(file);
        let text = std::fs::read_to_string(&path).expect("example");
        let policy = match parse_node_policy(&text, Some(&path)) {
            Ok(p) => p.policy,
            Err(d) => panic!("{d}"),
        };
        let mut state = CurrentState::new(server);
        let changes = plan(&policy, &state);
        assert!(!changes.is_empty());
        for change in &changes {
            state.apply(change);
        }
        assert_eq!(plan(&policy, &state), Vec::new(), "{file}");
    }
}

#[test]
fn an_alarm_sender_missing_from_the_list_is_a_warning() {
    let list = verify_file(&examples().join("federation.toml"), &[operator_key()]).expect("verified").into_list();
    let path = examples().join("riverton.toml");
    let policy = parse_node_policy(&std::fs::read_to_string(&path).unwrap(), Some(&path)).expect("valid").policy;
    assert_eq!(policy.validate(Some(&list)).warnings().count(), 0);

    let mut narrower = list.clone();
    let riverton = narrower.members.iter_mut().find(|m| m.server_name == "riverton:8448").unwrap();
    riverton.alarm_senders.remove(&tocsin_policies::AlarmLevel::Info);
    let warnings: Vec<String> = policy.validate(Some(&narrower)).warnings().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings.iter().any(|w| w.contains("riverton.toml:")
            && w.contains(
                "may raise info alarms here, but the federation list's alarm_senders of riverton:8448 \
                           does not name \"duty.officer\""
            )),
        "{warnings:?}"
    );
}
