//! The escalation room per room and per role: an alarm raised in a policy room that names an
//! escalation room escalates there, whoever raised it; elsewhere the sender's role's room wins
//! over the node's default. Seen by real clients in the rooms, and in the admin status.

use matrix_sdk::{
    Client,
    ruma::{OwnedEventId, OwnedRoomId, RoomId},
};
use serde_json::{Value, json};

use super::{admin_status, admin_token, raw_events, send, setup, step_names};
use crate::{common, fed};

fn alarm(id: &str) -> Value {
    json!({"msgtype": "m.text", "body": format!("Alarm {id}"),
           "org.tocsin.alarm": {"id": id, "level": "urgent", "ack_required": true, "ack_deadline_s": 2}})
}

/// The escalation messages a client sees in `room`, by the alarm text they quote.
async fn escalations(client: &Client, room: &RoomId) -> Vec<String> {
    raw_events(client, room)
        .await
        .into_iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .filter(|b| b.starts_with("🚨 Escalation"))
        .collect()
}

async fn raise(client: &Client, base: &str, room: &RoomId, id: &str) -> OwnedEventId {
    let (status, body) = send(client, base, room, alarm(id)).await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().unwrap().try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_alarm_escalates_into_its_rooms_escalation_room_else_its_senders_roles() {
    let s = setup().await;
    let node = s.a();
    let base = node.base_url();
    let chief = fed::user_on(node, "chief").await;
    let clerk = fed::user_on(node, "clerk").await;
    let lead = fed::user_on(node, "lead").await;
    let policy = node.services.policy.policy().unwrap();
    let applied = tocsin_node::policy::provision::apply(&node.services, &policy).await.unwrap();
    assert!(applied.failed.is_empty(), "{:?}", applied.failed);
    let room = |alias: &str| {
        let alias = tocsin_node::ruma::RoomAliasId::parse(format!("#{alias}:a.test")).unwrap();
        let id = node.services.rooms.resolve_alias(&alias).unwrap().unwrap();
        OwnedRoomId::try_from(id.as_str()).unwrap()
    };
    let (levee, levee_escalation, lead_escalation, default) =
        (room("levee"), room("levee-escalation"), room("lead-escalation"), room("escalation"));
    for r in [&levee, &levee_escalation, &lead_escalation, &default] {
        fed::accept_invite(&chief, r).await;
    }
    for member in [&clerk, &lead] {
        fed::accept_invite(member, &levee).await;
        fed::until_joined(&chief, &levee, member.user_id().unwrap()).await;
    }
    // A room the policy does not know: only the sender's role can name its escalation room.
    let ad_hoc = fed::shared_room(&lead, &[&clerk]).await;

    // Nobody acknowledges; each alarm escalates 2 s + 3 s after it is raised.
    raise(&chief, &base, &levee, "chief-levee").await;
    raise(&lead, &base, &levee, "lead-levee").await;
    raise(&lead, &base, &ad_hoc, "lead-ad-hoc").await;

    // The levee's room wins over the lead's role and over the node's default.
    let in_levee_room = common::eventually(&chief, 30, || async {
        let got = escalations(&chief, &levee_escalation).await;
        (got.len() == 2).then_some(got)
    })
    .await;
    assert!(in_levee_room.iter().any(|b| b.contains("Alarm chief-levee")), "{in_levee_room:?}");
    assert!(in_levee_room.iter().any(|b| b.contains("Alarm lead-levee")), "{in_levee_room:?}");
    // Outside a policy room, the lead's role names the room.
    let in_lead_room = common::eventually(&chief, 30, || async {
        let got = escalations(&chief, &lead_escalation).await;
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(in_lead_room.len(), 1, "{in_lead_room:?}");
    assert!(in_lead_room[0].contains("Alarm lead-ad-hoc") && in_lead_room[0].contains("@clerk:a.test"));
    // The node's default room heard of none of them.
    assert_eq!(escalations(&chief, &default).await, Vec::<String>::new());

    // The admin status says where each went and which entry chose it.
    let token = admin_token(node, "admin").await;
    for (id, room, chosen_by) in [
        ("chief-levee", &levee_escalation, "set by room \"levee\""),
        ("lead-levee", &levee_escalation, "set by room \"levee\""),
        ("lead-ad-hoc", &lead_escalation, "set by role \"lead\""),
    ] {
        let json = admin_status(node, &token, id).await;
        assert_eq!(step_names(&json)[..2], ["reminder", "escalation_room"], "{json}");
        let detail = json["steps"][1]["detail"].as_str().unwrap();
        assert!(detail.contains(room.as_str()) && detail.contains(chosen_by), "{id}: {detail}");
    }
}
