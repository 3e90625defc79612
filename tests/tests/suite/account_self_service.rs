//! What a user does to their own account from a stock client: tags a room as a favourite (seen
//! by their other device), and deactivates the account after the password challenge (then no
//! login, and the other members see them leave).

use matrix_sdk::ruma::{
    api::client::uiaa,
    events::tag::{TagInfo, TagName},
};

use crate::common::{self, eventually, start, user};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_reach_the_other_device_and_deactivation_needs_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |_| {}).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let room = alice.create_room(Default::default()).await.unwrap();
    room.invite_user_by_id(bob.user_id().unwrap()).await.unwrap();
    eventually(&bob, 10, || async { bob.get_room(room.room_id()).map(|_| ()) }).await;
    bob.join_room_by_id(room.room_id()).await.unwrap();

    // Alice marks the room a favourite with an order; her second device sees it after a sync.
    let mut info = TagInfo::new();
    info.order = Some(0.25);
    room.set_tag(TagName::Favorite, info).await.unwrap();
    room.set_tag(TagName::User("u.ops".parse().unwrap()), TagInfo::new()).await.unwrap();
    room.remove_tag(TagName::User("u.ops".parse().unwrap())).await.unwrap();
    let laptop = common::login(&node, "alice", "correct horse").await;
    let tags = eventually(&laptop, 10, || async {
        let seen = laptop.get_room(room.room_id())?;
        seen.tags().await.ok().flatten()
    })
    .await;
    assert_eq!(tags.len(), 1, "the removed tag is gone: {tags:?}");
    assert_eq!(tags.get(&TagName::Favorite).and_then(|t| t.order), Some(0.25));

    // Deactivation: refused without the password, done with it.
    let err = bob.account().deactivate(None, None, false).await.expect_err("a password challenge first");
    let challenge = err.as_uiaa_response().expect("a UIA challenge");
    let mut wrong =
        uiaa::Password::new(uiaa::UserIdentifier::Matrix(uiaa::MatrixUserIdentifier::new("bob".into())), "nope".into());
    wrong.session = challenge.session.clone();
    assert!(bob.account().deactivate(None, Some(uiaa::AuthData::Password(wrong)), false).await.is_err());
    let mut right = uiaa::Password::new(
        uiaa::UserIdentifier::Matrix(uiaa::MatrixUserIdentifier::new("bob".into())),
        "correct horse".into(),
    );
    right.session = challenge.session.clone();
    bob.account().deactivate(None, Some(uiaa::AuthData::Password(right)), false).await.expect("deactivated");

    assert!(bob.whoami().await.is_err(), "bob's access token is gone");
    let again = matrix_sdk::Client::builder().homeserver_url(node.base_url()).build().await.unwrap();
    assert!(again.matrix_auth().login_username("bob", "correct horse").send().await.is_err(), "no login after");
    eventually(&alice, 10, || async {
        let members = room.members(matrix_sdk::RoomMemberships::JOIN).await.ok()?;
        (members.len() == 1).then_some(())
    })
    .await;
    node.shutdown().await;
}
