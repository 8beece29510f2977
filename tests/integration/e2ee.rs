//! End-to-end encryption through matrix-sdk with its crypto machinery: clients exchange keys
//! through Roost and decrypt each other's messages in encrypted DMs and groups, on late joiners'
//! and new devices, with cross-signing and key backup.

use std::time::Duration;

use matrix_sdk::Client;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::TimelineEventKind;
use matrix_sdk::ruma::api::client::room::create_room;
use matrix_sdk::ruma::events::InitialStateEvent;
use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId};

use crate::common::{PASSWORD, TestServer};
use crate::sdk::sdk_user;

/// One sync that waits up to a second for news.
async fn sync(client: &Client) -> matrix_sdk::sync::SyncResponse {
    client
        .sync_once(SyncSettings::default().timeout(Duration::from_secs(1)))
        .await
        .unwrap()
}

/// Syncs until `body` arrives decrypted in `room` (at most a bounded number of syncs); answers
/// the event's ID, or panics naming what arrived instead.
async fn receive(client: &Client, room: &RoomId, body: &str) -> OwnedEventId {
    let mut seen = Vec::new();
    for _ in 0..15 {
        let response = sync(client).await;
        let Some(update) = response.rooms.joined.get(room) else {
            continue;
        };
        for event in &update.timeline.events {
            match &event.kind {
                TimelineEventKind::Decrypted(_) => {
                    let value: serde_json::Value = event.raw().deserialize_as().unwrap();
                    if value["content"]["body"] == body {
                        return event.event_id().unwrap();
                    }
                    seen.push(format!("decrypted {}", value["content"]["body"]));
                }
                TimelineEventKind::UnableToDecrypt { utd_info, .. } => {
                    seen.push(format!("undecryptable: {:?}", utd_info.reason));
                }
                TimelineEventKind::PlainText { .. } => {}
            }
        }
    }
    panic!("{body:?} never arrived decrypted; saw {seen:?}");
}

async fn send(client: &Client, room: &RoomId, body: &str) {
    client
        .get_room(room)
        .expect("room known")
        .send(RoomMessageEventContent::text_plain(body))
        .await
        .unwrap();
}

/// Creates an encrypted room inviting `invite`; every invitee joins; everybody syncs.
async fn encrypted_room(
    creator: &Client,
    members: &[(&Client, OwnedUserId)],
    direct: bool,
) -> OwnedRoomId {
    let mut request = create_room::v3::Request::new();
    request.invite = members.iter().map(|(_, id)| id.clone()).collect();
    request.is_direct = direct;
    request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
    request.initial_state = vec![
        InitialStateEvent::with_empty_state_key(
            RoomEncryptionEventContent::with_recommended_defaults(),
        )
        .to_raw_any(),
    ];
    let room_id = creator.send(request).await.unwrap().room_id;
    for (client, _) in members {
        sync(client).await;
        client.join_room_by_id(&room_id).await.unwrap();
    }
    sync(creator).await;
    for (client, _) in members {
        sync(client).await;
    }
    room_id
}

fn user_id(name: &str) -> OwnedUserId {
    OwnedUserId::try_from(format!("@{name}:localhost")).unwrap()
}

pub(crate) async fn login(server: &TestServer, name: &str, device_name: &str) -> Client {
    let client = Client::builder()
        .homeserver_url(&server.base)
        .build()
        .await
        .unwrap();
    client
        .matrix_auth()
        .login_username(name, PASSWORD)
        .initial_device_display_name(device_name)
        .send()
        .await
        .unwrap();
    client
}

#[tokio::test]
async fn encrypted_dm_group_late_joiner_and_second_device() {
    let server = TestServer::start().await;
    let alice = sdk_user(&server, "alice").await;
    let bob = sdk_user(&server, "bob").await;
    let carol = sdk_user(&server, "carol").await;
    for client in [&alice, &bob, &carol] {
        sync(client).await;
    }

    // A direct chat: each side decrypts the other.
    let dm = encrypted_room(&alice, &[(&bob, user_id("bob"))], true).await;
    send(&alice, &dm, "hello bob").await;
    receive(&bob, &dm, "hello bob").await;
    send(&bob, &dm, "hello alice").await;
    receive(&alice, &dm, "hello alice").await;

    // A group of two, then Carol joins later and reads what is sent after.
    let group = encrypted_room(&alice, &[(&bob, user_id("bob"))], false).await;
    send(&bob, &group, "group hello").await;
    receive(&alice, &group, "group hello").await;
    alice
        .get_room(&group)
        .unwrap()
        .invite_user_by_id(&user_id("carol"))
        .await
        .unwrap();
    sync(&carol).await;
    carol.join_room_by_id(&group).await.unwrap();
    sync(&alice).await;
    sync(&bob).await;
    sync(&carol).await;
    send(&alice, &group, "welcome carol").await;
    receive(&carol, &group, "welcome carol").await;
    receive(&bob, &group, "welcome carol").await;
    send(&carol, &group, "thanks").await;
    receive(&alice, &group, "thanks").await;

    // Bob logs in on a second device: once Alice has heard of it, it gets her messages too.
    let bob_laptop = login(&server, "bob", "laptop").await;
    sync(&bob_laptop).await;
    sync(&alice).await;
    send(&alice, &dm, "to both of your devices").await;
    receive(&bob_laptop, &dm, "to both of your devices").await;
    receive(&bob, &dm, "to both of your devices").await;
}

#[tokio::test]
async fn cross_signing_and_key_backup_restore_on_a_new_device() {
    let server = TestServer::start().await;
    let alice = sdk_user(&server, "alice").await;
    let bob = sdk_user(&server, "bob").await;
    sync(&alice).await;
    sync(&bob).await;

    // Cross-signing: the first upload needs no password.
    alice
        .encryption()
        .bootstrap_cross_signing(None)
        .await
        .unwrap();
    let status = alice.encryption().cross_signing_status().await.unwrap();
    assert!(status.is_complete(), "{status:?}");
    sync(&bob).await;
    let identity = bob
        .encryption()
        .request_user_identity(&user_id("alice"))
        .await
        .unwrap();
    assert!(
        identity.is_some(),
        "Bob sees Alice's cross-signing identity"
    );

    // Recovery: a backup and secret storage; room keys go into the backup.
    let recovery_key = alice.encryption().recovery().enable().await.unwrap();
    let dm = encrypted_room(&alice, &[(&bob, user_id("bob"))], true).await;
    send(&alice, &dm, "remember this").await;
    let event_id = receive(&bob, &dm, "remember this").await;
    alice
        .encryption()
        .backups()
        .wait_for_steady_state()
        .await
        .unwrap();

    // A new device of Alice restores the keys from the backup and reads the old message.
    let phone = login(&server, "alice", "phone").await;
    sync(&phone).await;
    phone
        .encryption()
        .recovery()
        .recover(&recovery_key)
        .await
        .unwrap();
    phone
        .encryption()
        .backups()
        .download_room_keys_for_room(&dm)
        .await
        .unwrap();
    let event = phone
        .get_room(&dm)
        .expect("the phone knows the room")
        .event(&event_id, None)
        .await
        .unwrap();
    assert!(
        matches!(event.kind, TimelineEventKind::Decrypted(_)),
        "{:?}",
        event.kind
    );
    let value: serde_json::Value = event.raw().deserialize_as().unwrap();
    assert_eq!(value["content"]["body"], "remember this");
}
