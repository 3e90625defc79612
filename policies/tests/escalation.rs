//! Where an alarm escalates: per room, per role, per node, checked with file:line diagnostics.

use std::path::Path;

use tocsin_policies::{EscalationSource, parse_node_policy};

fn file() -> Option<&'static Path> {
    Some(Path::new("policies/x.toml"))
}

const POLICY: &str = r#"[alarms]
escalation_room = "staff"

[[role]]
name = "dike_warden"
power_level = 50
may_send_alarms = true
escalation_room = "dike-office"

[[role]]
name = "clerk"
power_level = 0

[[account]]
localpart = "warden"
roles = ["clerk", "dike_warden"]

[[account]]
localpart = "clerk"
roles = ["clerk"]

[[room]]
alias = "levee"
name = "Levee watch"
escalation_room = "levee-duty"

[[room]]
alias = "harbour"
name = "Harbour"

[[room]]
alias = "staff"
name = "Crisis staff"

[[room]]
alias = "dike-office"
name = "Dike office"

[[room]]
alias = "levee-duty"
name = "Levee duty officers"
"#;

#[test]
fn the_room_wins_over_the_role_and_the_role_over_the_node() {
    let parsed = parse_node_policy(POLICY, file()).expect("valid policy");
    assert!(parsed.warnings.0.is_empty(), "{:?}", parsed.warnings);
    let p = &parsed.policy;
    // The alarm's room names one: it wins, whoever raised the alarm.
    assert_eq!(p.escalation_room_for(Some("levee"), "warden"), Some(("levee-duty", EscalationSource::Room("levee"))));
    assert_eq!(p.escalation_room_for(Some("levee"), "clerk"), Some(("levee-duty", EscalationSource::Room("levee"))));
    // A room without one (or not a policy room): the first of the sender's roles that names one.
    let by_role = Some(("dike-office", EscalationSource::Role("dike_warden")));
    assert_eq!(p.escalation_room_for(Some("harbour"), "warden"), by_role);
    assert_eq!(p.escalation_room_for(None, "warden"), by_role);
    // Neither: the node's default.
    assert_eq!(p.escalation_room_for(Some("harbour"), "clerk"), Some(("staff", EscalationSource::Node)));
    assert_eq!(p.escalation_room_for(None, "someone-else"), Some(("staff", EscalationSource::Node)));

    let without_default = POLICY.replace("escalation_room = \"staff\"\n", "");
    let p = parse_node_policy(&without_default, file()).expect("valid policy").policy;
    assert_eq!(p.escalation_room_for(None, "clerk"), None);
}

#[test]
fn an_escalation_room_must_be_a_room_of_the_policy() {
    let text = r#"[alarms]
escalation_room = "river-valley"

[[role]]
name = "warden"
power_level = 50
escalation_room = "nowhere"

[[room]]
alias = "levee"
name = "Levee watch"
escalation_room = "levee-dutty"

[[room]]
alias = "river-valley"
name = "River valley"
kind = "space"
"#;
    let errors: Vec<String> = match parse_node_policy(text, file()) {
        Ok(p) => panic!("expected errors, got {:?}", p.policy),
        Err(d) => d.errors().map(ToString::to_string).collect(),
    };
    let expected = [
        "policies/x.toml:2:19: alarms.escalation_room: \"river-valley\" is a space",
        "policies/x.toml:7:19: role[0].escalation_room: unknown room \"nowhere\" (defined: \"levee\", \"river-valley\")",
        "policies/x.toml:12:19: room[0].escalation_room: unknown room \"levee-dutty\" (defined: \"levee\", \"river-valley\")",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (got, want) in errors.iter().zip(expected) {
        assert!(got.starts_with(want), "got:  {got}\nwant: {want}");
    }
}

#[test]
fn roles_naming_different_rooms_and_a_room_escalating_into_itself_are_warned_about() {
    let text = r#"[[role]]
name = "warden"
power_level = 50
escalation_room = "a"

[[role]]
name = "medic"
power_level = 50
escalation_room = "b"

[[account]]
localpart = "pat"
roles = ["warden", "medic"]

[[room]]
alias = "a"
name = "A"
encrypted = true
escalation_room = "a"

[[room]]
alias = "b"
name = "B"
"#;
    let parsed = parse_node_policy(text, file()).expect("warnings only");
    let warnings: Vec<String> = parsed.warnings.warnings().map(ToString::to_string).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("policies/x.toml:13:9: warning: account[0].roles: the roles name different")
                && w.contains("into \"a\", of its first such role \"warden\"")),
        "{warnings:#?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("policies/x.toml:19:19: warning: room[0].escalation_room: a room that escalates")),
        "{warnings:#?}"
    );
}
