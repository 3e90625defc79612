//! What Element X asks a homeserver on login and start, through matrix-sdk (the SDK Element X
//! is built on), each answered as a stock client expects: sliding sync advertised, OAuth
//! absent (so the app offers password login), capabilities, the profile, the upload limit, the
//! default push rules, whether a key backup exists, devices, and the account data the app
//! reads.

use matrix_sdk::{
    Client,
    authentication::oauth::error::OAuthDiscoveryError,
    notification_settings::{IsEncrypted, IsOneToOne, RoomNotificationMode},
    ruma::api::client::{account::get_3pids, session::get_login_types::v3::LoginType},
    sliding_sync::Version,
};

use crate::common::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn element_x_logs_in_and_starts_without_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.max_upload_bytes = 20 * 1024 * 1024).await;
    node.services.users.create_account("alice", Some("correct horse"), None, false).await.expect("account");
    let client = Client::builder().homeserver_url(node.base_url()).build().await.expect("client builds");

    // Before login: the server's versions, sliding sync, and how one may log in.
    assert!(
        client.available_sliding_sync_versions().await.iter().any(|v| matches!(v, Version::Native)),
        "simplified sliding sync is advertised"
    );
    match client.oauth().server_metadata().await {
        Err(OAuthDiscoveryError::NotSupported) => {}
        other => panic!("no OAuth server is advertised, so Element X offers password login: {other:?}"),
    }
    let login_types = client.matrix_auth().get_login_types().await.expect("login types");
    assert!(login_types.flows.iter().any(|f| matches!(f, LoginType::Password(_))), "{:?}", login_types.flows);
    client
        .matrix_auth()
        .login_username("alice", "correct horse")
        .initial_device_display_name("Element X")
        .send()
        .await
        .expect("password login");

    // After login, what the app loads before it shows the room list.
    let capabilities = client.homeserver_capabilities();
    assert!(capabilities.can_change_password().await.expect("capabilities"));
    assert!(capabilities.can_change_displayname().await.expect("capabilities"));
    assert!(!capabilities.room_versions().await.expect("capabilities").available.is_empty());
    assert!(!capabilities.can_change_thirdparty_ids().await.expect("capabilities"), "no e-mail or phone binding");
    let threepids = client.send(get_3pids::v3::Request::new()).await.expect("the account's third-party ids");
    assert!(threepids.threepids.is_empty());
    client.account().get_display_name().await.expect("the profile answers");
    assert_eq!(u64::from(client.load_or_fetch_max_upload_size().await.expect("media config")), 20 * 1024 * 1024);
    let settings = client.notification_settings().await;
    assert_eq!(
        settings.get_default_room_notification_mode(IsEncrypted::Yes, IsOneToOne::Yes).await,
        RoomNotificationMode::AllMessages,
        "the spec's default rules: every message in a DM notifies"
    );
    assert_eq!(
        settings.get_default_room_notification_mode(IsEncrypted::No, IsOneToOne::No).await,
        RoomNotificationMode::AllMessages,
        "the spec's default rules: every message in a group notifies too (`.m.rule.message`)"
    );
    assert!(!client.encryption().backups().fetch_exists_on_server().await.expect("backup version"));
    let devices = client.devices().await.expect("devices");
    assert_eq!(devices.devices.len(), 1, "the new login is the only device");
    assert_eq!(devices.devices[0].display_name.as_deref(), Some("Element X"));
    assert!(client.account().fetch_media_preview_config_event_content().await.expect("account data").is_none());
    node.shutdown().await;
}
