//! A node policy split over a folder of files.

use std::path::Path;

use tocsin_policies::{FileKind, PolicyError, check_paths, read_node_policy};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write");
}

const ROLES: &str = r#"
[[role]]
name = "mayor"
power_level = 100
may_send_alarms = true

[[role]]
name = "staff"
power_level = 50
"#;

const ACCOUNTS: &str = r#"
[[account]]
localpart = "mayor"
display_name = "Mayor"
roles = ["mayor"]

[[account]]
localpart = "clerk"
roles = ["staff"]
"#;

const ROOMS: &str = r#"
[room_defaults]
retention_max_age = "7d"

[[room]]
alias = "crisis"
name = "Crisis"
members_by_role = ["mayor", "staff"]
"#;

#[test]
fn files_in_a_folder_are_merged() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "10-roles.toml", ROLES);
    write(dir.path(), "20-accounts.toml", ACCOUNTS);
    write(dir.path(), "30-rooms.toml", ROOMS);
    write(dir.path(), "README.md", "not a policy");
    let parsed = match read_node_policy(dir.path()) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let p = &parsed.policy;
    assert_eq!(parsed.files.len(), 3);
    assert_eq!(p.roles.len(), 2);
    assert_eq!(p.accounts.len(), 2);
    assert_eq!(p.room_defaults.retention_max_age, Some(7 * 86_400));
    // Cross-file references resolve: accounts in one file, roles in another.
    assert_eq!(p.power_level_of("clerk"), 50);
    assert!(p.may_send_alarm("mayor", tocsin_policies::AlarmLevel::Critical));
    assert!(!p.may_send_alarm("clerk", tocsin_policies::AlarmLevel::Info));
    let crisis = p.room("crisis").expect("room");
    assert_eq!(p.members_of(crisis), ["clerk", "mayor"]);
    // Crisis defaults apply where the files say nothing.
    assert!(p.encrypted(crisis));
    assert!(!p.room_defaults.guest_access);
}

#[test]
fn duplicates_across_files_name_both_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "a.toml", &format!("{ROLES}\n{ACCOUNTS}"));
    write(
        dir.path(),
        "b.toml",
        "[[account]]\nlocalpart = \"clerk\"\nroles = [\"staff\"]\n\n[[role]]\nname = \"staff\"\npower_level = 10\n",
    );
    let err = read_node_policy(dir.path()).expect_err("duplicates");
    let PolicyError::Invalid(d) = err else {
        panic!("expected Invalid, got {err:?}");
    };
    let a = dir.path().join("a.toml").display().to_string();
    let b = dir.path().join("b.toml").display().to_string();
    let errors: Vec<String> = d.errors().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            format!("{b}:2:13: account[2].localpart: duplicate account \"clerk\" (first defined at {a}:17:1)"),
            format!("{b}:6:8: role[2].name: duplicate role \"staff\" (first defined at {a}:7:1)"),
        ]
    );
}

#[test]
fn a_singleton_table_twice_names_both_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "a.toml", &format!("{ROLES}\n[alarms]\nsenders = [\"mayor\"]\n"));
    write(dir.path(), "b.toml", "# more alarms\n[alarms]\nsenders = [\"staff\"]\n");
    let Err(PolicyError::Invalid(d)) = read_node_policy(dir.path()) else {
        panic!("expected Invalid");
    };
    let a = dir.path().join("a.toml").display().to_string();
    let b = dir.path().join("b.toml").display().to_string();
    assert_eq!(d.to_string(), format!("{b}:2:1: alarms: [alarms] is defined twice: in {a}:11:1 and again in {b}:2:1"));
}

#[test]
fn a_syntax_error_in_one_file_does_not_hide_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "a.toml", "[[role]\nname = \"x\"\n");
    write(dir.path(), "b.toml", "[[room]]\nalias = \"r\"\nname = 5\n");
    let Err(PolicyError::Invalid(d)) = read_node_policy(dir.path()) else {
        panic!("expected Invalid");
    };
    let text = d.to_string();
    assert!(text.contains("a.toml:1:"), "{text}");
    assert!(text.contains("b.toml:3:8: room[0].name: expected a string, found integer 5"), "{text}");
}

#[test]
fn check_paths_merges_a_folder_and_checks_lists_in_it_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "roles.toml", ROLES);
    write(dir.path(), "accounts.toml", ACCOUNTS);
    write(dir.path(), "rooms.toml", ROOMS);
    write(
        dir.path(),
        "federation.toml",
        "[federation]\nname = \"F\"\nversion = 1\nissued = \"2025-01-01T00:00:00Z\"\nexpires = \"2099-01-01T00:00:00Z\"\n",
    );
    let report = check_paths(&[dir.path().to_path_buf()], &[]);
    let kinds: Vec<(String, FileKind)> = report
        .files
        .iter()
        .map(|f| (f.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), f.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("federation.toml".to_string(), FileKind::FederationList),
            ("accounts.toml".to_string(), FileKind::NodePolicy),
            ("roles.toml".to_string(), FileKind::NodePolicy),
            ("rooms.toml".to_string(), FileKind::NodePolicy),
        ]
    );
    // The only error: the list is not signed. The merged policy itself is fine.
    let errors: Vec<String> = report.diagnostics.errors().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 1, "{report}");
    assert!(errors[0].contains("federation.toml: signature: the list is not signed"), "{report}");
}
