//! Plans converge: applying a plan and planning again yields nothing, also after a partial
//! apply (a node that crashed half-way) and after drift.

use tocsin_policies::{Change, CurrentState, NodePolicy, parse_node_policy, plan};

const POLICY: &str = r#"
[node]
server_name = "county-fire:8450"

[room_defaults]
history_visibility = "invited"
retention_max_age = "30d"

[[role]]
name = "chief"
power_level = 100
may_send_alarms = true

[[role]]
name = "dispatcher"
power_level = 50

[[account]]
localpart = "chief"
display_name = "Fire Chief"
roles = ["chief"]
admin = true
password = "demo"

[[account]]
localpart = "dispatch"
roles = ["dispatcher"]

[[room]]
alias = "fire"
name = "County fire"
kind = "space"
members_by_role = ["chief", "dispatcher"]

[[room]]
alias = "fire-ops"
name = "Fire operations"
topic = "Shared with both cities"
members_by_role = ["chief", "dispatcher"]
shared_with = ["riverton:8448", "lakeside:8449"]
remote_members = ["@crisis.lead:riverton:8448"]
parent = "fire"

[[room]]
alias = "chief-line"
name = "Chief line"
access_rule = "direct"
members = ["chief"]
shared_with = ["riverton:8448"]
remote_members = ["@crisis.lead:riverton:8448"]
parent = "fire"
"#;

fn policy() -> NodePolicy {
    match parse_node_policy(POLICY, None) {
        Ok(p) => p.policy,
        Err(d) => panic!("{d}"),
    }
}

fn apply(state: &mut CurrentState, changes: &[Change]) {
    for c in changes {
        state.apply(c);
    }
}

#[test]
fn applying_a_plan_then_replanning_yields_nothing() {
    let desired = policy();
    let mut state = CurrentState::new("county-fire:8450");
    let changes = plan(&desired, &state);
    apply(&mut state, &changes);
    assert_eq!(plan(&desired, &state), Vec::<Change>::new());
    let ops = &state.rooms["fire-ops"];
    assert!(ops.members.contains("@crisis.lead:riverton:8448"));
    assert_eq!(ops.parent.as_deref(), Some("fire"));
    assert_eq!(ops.power_levels["@chief:county-fire:8450"], 100);
    assert!(state.accounts["chief"].admin);
}

#[test]
fn a_partial_apply_converges_on_the_next_run() {
    let desired = policy();
    let full = plan(&desired, &CurrentState::new("county-fire:8450"));
    for cut in 0..=full.len() {
        let mut state = CurrentState::new("county-fire:8450");
        apply(&mut state, &full[..cut]);
        let rest = plan(&desired, &state);
        assert!(rest.len() <= full.len() - cut, "cut {cut}: the rest of the plan must not grow");
        apply(&mut state, &rest);
        assert_eq!(plan(&desired, &state), Vec::<Change>::new(), "cut {cut}");
    }
}

#[test]
fn a_changed_policy_plans_only_the_difference() {
    let mut state = CurrentState::new("county-fire:8450");
    let first = plan(&policy(), &state);
    apply(&mut state, &first);
    let changed = POLICY
        .replace("name = \"Fire operations\"", "name = \"Fire operations (flood)\"")
        .replace("power_level = 50", "power_level = 60");
    let desired = match parse_node_policy(&changed, None) {
        Ok(p) => p.policy,
        Err(d) => panic!("{d}"),
    };
    let changes: Vec<String> = plan(&desired, &state).iter().map(ToString::to_string).collect();
    assert_eq!(
        changes,
        [
            "set name of #fire-ops: \"Fire operations\" -> \"Fire operations (flood)\"",
            "set power level of @dispatch:county-fire:8450 in #fire: 50 -> 60",
            "set power level of @dispatch:county-fire:8450 in #fire-ops: 50 -> 60",
        ]
    );
}
