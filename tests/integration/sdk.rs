//! The account lifecycle through matrix-sdk, the client library real apps use.

use matrix_sdk::Client;
use matrix_sdk::ruma::api::client::account::register;
use matrix_sdk::ruma::api::client::uiaa;
use matrix_sdk::ruma::mxc_uri;

use crate::common::{PASSWORD, TestServer, errcode};

/// A matrix-sdk client registered (dummy stage) as `name`.
pub async fn sdk_user(server: &TestServer, name: &str) -> Client {
    sdk_user_at(&server.base, name).await
}

/// Registers `name` (dummy stage) with the homeserver at `base` through matrix-sdk.
pub async fn sdk_user_at(base: &str, name: &str) -> Client {
    let client = Client::builder()
        .homeserver_url(base)
        .build()
        .await
        .unwrap();
    let mut request = register::v3::Request::new();
    request.username = Some(name.into());
    request.password = Some(PASSWORD.into());
    request.auth = Some(uiaa::AuthData::Dummy(uiaa::Dummy::new()));
    client.matrix_auth().register(request).await.unwrap();
    client
}

#[tokio::test]
async fn register_login_profile_devices_logout() {
    let server = TestServer::start().await;

    // Register with the dummy stage.
    let client = Client::builder()
        .homeserver_url(&server.base)
        .build()
        .await
        .unwrap();
    let mut request = register::v3::Request::new();
    request.username = Some("alice".into());
    request.password = Some(PASSWORD.into());
    request.initial_device_display_name = Some("phone".into());
    request.auth = Some(uiaa::AuthData::Dummy(uiaa::Dummy::new()));
    let registered = client.matrix_auth().register(request).await.unwrap();
    assert_eq!(registered.user_id, "@alice:localhost");

    // Log in from a second client.
    let laptop = Client::builder()
        .homeserver_url(&server.base)
        .build()
        .await
        .unwrap();
    laptop
        .matrix_auth()
        .login_username("alice", PASSWORD)
        .initial_device_display_name("laptop")
        .send()
        .await
        .unwrap();
    let whoami = laptop.whoami().await.unwrap();
    assert_eq!(whoami.user_id, "@alice:localhost");
    assert_eq!(
        Some(whoami.device_id.as_deref().unwrap()),
        laptop.device_id()
    );

    // Profile: set, read back, read as someone else.
    laptop
        .account()
        .set_display_name(Some("Alice A."))
        .await
        .unwrap();
    let avatar = mxc_uri!("mxc://localhost/abcdefgh");
    laptop.account().set_avatar_url(Some(avatar)).await.unwrap();
    assert_eq!(
        laptop
            .account()
            .get_display_name()
            .await
            .unwrap()
            .as_deref(),
        Some("Alice A.")
    );
    assert_eq!(
        laptop.account().get_avatar_url().await.unwrap().as_deref(),
        Some(avatar)
    );
    let bob = server.register("bob").await;
    let (status, profile) = server
        .get(
            "/_matrix/client/v3/profile/@alice:localhost",
            bob["access_token"].as_str(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(profile["displayname"], "Alice A.");
    assert_eq!(profile["avatar_url"], "mxc://localhost/abcdefgh");

    // Devices: both logins are listed with their names and last-seen data.
    let devices = laptop.devices().await.unwrap().devices;
    assert_eq!(devices.len(), 2);
    let laptop_device = devices
        .iter()
        .find(|d| Some(d.device_id.as_ref()) == laptop.device_id())
        .unwrap();
    assert_eq!(laptop_device.display_name.as_deref(), Some("laptop"));
    assert_eq!(laptop_device.last_seen_ip.as_deref(), Some("127.0.0.1"));
    assert!(laptop_device.last_seen_ts.is_some());

    // Log out: the token stops working at once; the other device still works.
    let old_token = laptop.access_token().unwrap();
    laptop.matrix_auth().logout().await.unwrap();
    let (status, body) = server
        .get("/_matrix/client/v3/account/whoami", Some(&old_token))
        .await;
    assert_eq!(status, 401);
    assert_eq!(errcode(&body), "M_UNKNOWN_TOKEN");
    assert_eq!(body["soft_logout"], false);
    assert_eq!(client.whoami().await.unwrap().user_id, "@alice:localhost");
    assert_eq!(client.devices().await.unwrap().devices.len(), 1);
}

#[tokio::test]
async fn sdk_sees_login_errors() {
    let server = TestServer::start().await;
    server.register("carol").await;
    let client = Client::builder()
        .homeserver_url(&server.base)
        .build()
        .await
        .unwrap();
    let err = client
        .matrix_auth()
        .login_username("carol", "wrong password")
        .send()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("M_FORBIDDEN") || format!("{err:?}").contains("Forbidden"),
        "{err:?}"
    );
}

/// A direct chat through matrix-sdk's typed requests: create with an invite, join, 200 messages,
/// history read back in order with pagination.
#[tokio::test]
async fn direct_chat_history_through_the_sdk() {
    use matrix_sdk::ruma::api::Direction;
    use matrix_sdk::ruma::api::client::{membership::join_room_by_id, message, room::create_room};
    use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
    use matrix_sdk::ruma::{OwnedTransactionId, UserId};

    let server = TestServer::start().await;
    let alice = sdk_user(&server, "alice").await;
    let bob = sdk_user(&server, "bob").await;
    let bob_id = UserId::parse("@bob:localhost").unwrap();

    let mut create = create_room::v3::Request::new();
    create.invite = vec![bob_id.clone()];
    create.is_direct = true;
    create.preset = Some(create_room::v3::RoomPreset::TrustedPrivateChat);
    let room_id = alice.send(create).await.unwrap().room_id;
    bob.send(join_room_by_id::v3::Request::new(room_id.clone()))
        .await
        .unwrap();

    for i in 0..200 {
        let (sender, name) = if i % 2 == 0 {
            (&alice, "alice")
        } else {
            (&bob, "bob")
        };
        let content = RoomMessageEventContent::text_plain(format!("{name} {i}"));
        let request = message::send_message_event::v3::Request::new(
            room_id.clone(),
            OwnedTransactionId::from(format!("txn{i}")),
            &content,
        )
        .unwrap();
        sender.send(request).await.unwrap();
    }

    // Bob pages backwards through the whole history, 50 at a time.
    let mut bodies = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..20 {
        let mut request =
            message::get_message_events::v3::Request::new(room_id.clone(), Direction::Backward);
        request.from = from.clone();
        request.limit = 50u32.into();
        let page = bob.send(request).await.unwrap();
        for event in &page.chunk {
            let value: serde_json::Value = event.deserialize_as().unwrap();
            if value["type"] == "m.room.message" {
                bodies.push(value["content"]["body"].as_str().unwrap().to_owned());
            }
        }
        match page.end {
            Some(end) => from = Some(end),
            None => break,
        }
    }
    let expected: Vec<String> = (0..200)
        .rev()
        .map(|i| format!("{} {i}", if i % 2 == 0 { "alice" } else { "bob" }))
        .collect();
    assert_eq!(bodies, expected);
}

/// A group of three through matrix-sdk's typed requests: the owner renames the room, sets an
/// avatar and kicks a member, who then can neither send nor read what follows.
#[tokio::test]
async fn group_room_through_the_sdk() {
    use matrix_sdk::ruma::api::Direction;
    use matrix_sdk::ruma::api::client::{
        membership::{join_room_by_id, kick_user},
        message,
        room::create_room,
        state,
    };
    use matrix_sdk::ruma::events::EmptyStateKey;
    use matrix_sdk::ruma::events::room::avatar::RoomAvatarEventContent;
    use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
    use matrix_sdk::ruma::events::room::name::RoomNameEventContent;
    use matrix_sdk::ruma::{OwnedTransactionId, UserId};

    let server = TestServer::start().await;
    let owner = sdk_user(&server, "olga").await;
    let pia = sdk_user(&server, "pia").await;
    let quinn = sdk_user(&server, "quinn").await;

    let mut create = create_room::v3::Request::new();
    create.name = Some("study group".into());
    create.invite = vec![
        UserId::parse("@pia:localhost").unwrap(),
        UserId::parse("@quinn:localhost").unwrap(),
    ];
    let room_id = owner.send(create).await.unwrap().room_id;
    for member in [&pia, &quinn] {
        member
            .send(join_room_by_id::v3::Request::new(room_id.clone()))
            .await
            .unwrap();
    }

    let rename = state::send_state_event::v3::Request::new(
        room_id.clone(),
        &EmptyStateKey,
        &RoomNameEventContent::new("exam prep".into()),
    )
    .unwrap();
    owner.send(rename).await.unwrap();
    let mut avatar = RoomAvatarEventContent::new();
    avatar.url = Some(matrix_sdk::ruma::mxc_uri!("mxc://localhost/avatar1").to_owned());
    owner
        .send(
            state::send_state_event::v3::Request::new(room_id.clone(), &EmptyStateKey, &avatar)
                .unwrap(),
        )
        .await
        .unwrap();
    let say = |client: &Client, txn: &str, text: &str| {
        let request = message::send_message_event::v3::Request::new(
            room_id.clone(),
            OwnedTransactionId::from(txn),
            &RoomMessageEventContent::text_plain(text),
        )
        .unwrap();
        let client = client.clone();
        async move { client.send(request).await }
    };
    say(&pia, "p1", "hi all").await.unwrap();

    // A member cannot kick; the owner can.
    let kick =
        kick_user::v3::Request::new(room_id.clone(), UserId::parse("@quinn:localhost").unwrap());
    assert!(pia.send(kick.clone()).await.is_err());
    owner.send(kick).await.unwrap();
    assert!(say(&quinn, "q1", "let me back").await.is_err());
    say(&owner, "o1", "after the kick").await.unwrap();

    let history = |client: &Client| {
        let request =
            message::get_message_events::v3::Request::new(room_id.clone(), Direction::Backward);
        let client = client.clone();
        async move {
            let page = client.send(request).await.unwrap();
            page.chunk
                .iter()
                .map(|e| e.deserialize_as::<serde_json::Value>().unwrap())
                .collect::<Vec<_>>()
        }
    };
    let seen_by_quinn = history(&quinn).await;
    let bodies = |events: &[serde_json::Value]| {
        events
            .iter()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    assert!(bodies(&seen_by_quinn).contains(&"hi all".to_owned()));
    assert!(!bodies(&seen_by_quinn).contains(&"after the kick".to_owned()));
    let seen_by_pia = history(&pia).await;
    assert!(bodies(&seen_by_pia).contains(&"after the kick".to_owned()));
    let name: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v3/rooms/{room_id}/state/m.room.name",
            server.base
        ))
        .bearer_auth(pia.access_token().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(name["name"], "exam prep");
}
