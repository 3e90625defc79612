use super::*;
use crate::node_policy::parse_node_policy;

const POLICY: &str = r#"
[node]
server_name = "riverton:8448"

[room_defaults]
retention_max_age = "30d"

[[role]]
name = "mayor"
power_level = 100
may_send_alarms = true

[[role]]
name = "staff"
power_level = 50

[[account]]
localpart = "mayor"
display_name = "Mayor Ann Doe"
roles = ["mayor"]
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g"

[[account]]
localpart = "clerk"
display_name = "Clerk"
roles = ["staff"]

[[room]]
alias = "valley"
name = "River Valley"
kind = "space"
members_by_role = ["mayor", "staff"]

[[room]]
alias = "crisis"
name = "Crisis staff"
topic = "Joint crisis room"
members_by_role = ["mayor", "staff"]
shared_with = ["lakeside:8449"]
parent = "valley"
"#;

fn policy() -> NodePolicy {
    match parse_node_policy(POLICY, None) {
        Ok(p) => p.policy,
        Err(d) => panic!("{d}"),
    }
}

fn apply_all(state: &mut CurrentState, changes: &[Change]) {
    for c in changes {
        state.apply(c);
    }
}

#[test]
fn plan_from_nothing_converges() {
    let desired = policy();
    let mut state = CurrentState::new("riverton:8448");
    let changes = plan(&desired, &state);
    assert!(!changes.is_empty());
    // Spaces are created before the rooms in them.
    let created: Vec<&str> = changes
        .iter()
        .filter_map(|c| match c {
            Change::CreateRoom(s) => Some(s.alias.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(created, ["valley", "crisis"]);
    apply_all(&mut state, &changes);
    assert_eq!(plan(&desired, &state), Vec::<Change>::new());
    let crisis = &state.rooms["crisis"];
    assert!(crisis.encrypted);
    assert_eq!(crisis.power_levels["@mayor:riverton:8448"], 100);
    assert_eq!(crisis.power_levels["@clerk:riverton:8448"], 50);
    assert_eq!(crisis.retention_max_age, Some(30 * 86_400));
    assert_eq!(
        crisis.allowed_servers,
        Some(BTreeSet::from(["lakeside:8449".to_string(), "riverton:8448".to_string()]))
    );
    assert_eq!(crisis.parent.as_deref(), Some("valley"));
}

#[test]
fn plan_against_drifted_state_converges() {
    let desired = policy();
    let mut state = CurrentState::new("riverton:8448");
    let initial = plan(&desired, &state);
    apply_all(&mut state, &initial);
    // Someone renamed things by hand, demoted the mayor and unset encryption in the view.
    let mayor = state.accounts.get_mut("mayor").unwrap();
    mayor.display_name = Some("Ann".into());
    mayor.roles.clear();
    let crisis = state.rooms.get_mut("crisis").unwrap();
    crisis.name = "old name".into();
    crisis.topic = None;
    crisis.encrypted = false;
    crisis.history_visibility = HistoryVisibility::WorldReadable;
    crisis.power_levels.insert("@mayor:riverton:8448".into(), 0);
    crisis.members.remove("@clerk:riverton:8448");
    crisis.allowed_servers = None;
    crisis.parent = None;
    // An extra member the policy does not know is left alone.
    crisis.members.insert("@visitor:lakeside:8449".into());

    let changes = plan(&desired, &state);
    let text: Vec<String> = changes.iter().map(ToString::to_string).collect();
    assert!(text.contains(&"set display name of @mayor: \"Ann\" -> \"Mayor Ann Doe\"".to_string()), "{text:#?}");
    assert!(text.contains(&"set name of #crisis: \"old name\" -> \"Crisis staff\"".to_string()));
    assert!(text.contains(&"enable encryption in #crisis".to_string()));
    assert!(text.contains(&"invite @clerk:riverton:8448 to #crisis".to_string()));
    assert!(text.contains(&"set power level of @mayor:riverton:8448 in #crisis: 0 -> 100".to_string()));
    assert!(!text.iter().any(|t| t.contains("visitor")));
    apply_all(&mut state, &changes);
    assert_eq!(plan(&desired, &state), Vec::<Change>::new());
    assert!(state.rooms["crisis"].members.contains("@visitor:lakeside:8449"));
}

#[test]
fn display_never_shows_passwords() {
    let desired = policy();
    let changes = plan(&desired, &CurrentState::new("riverton:8448"));
    let all: String = changes.iter().map(|c| format!("{c}\n{c:?}\n")).collect();
    assert!(!all.contains("argon2id"), "{all}");
    assert!(
        all.contains(
            "create account @mayor (display name \"Mayor Ann Doe\", roles [mayor], password hash from policy)"
        )
    );
    assert!(all.contains("create space #valley \"River Valley\""));
}

#[test]
fn unresolvable_differences_are_conflicts() {
    let desired = policy();
    let mut state = CurrentState::new("riverton:8448");
    let initial = plan(&desired, &state);
    apply_all(&mut state, &initial);
    state.rooms.get_mut("valley").unwrap().kind = RoomKind::Room;
    let c = conflicts(&desired, &state);
    assert_eq!(c.len(), 1);
    assert!(c[0].contains("#valley exists as a room"));
}
