//! Live data through matrix-sdk: typing, receipts, presence, account data and tags, to-device.

use matrix_sdk::config::SyncSettings;
use matrix_sdk::ruma::api::client::receipt::create_receipt::v3::ReceiptType;
use matrix_sdk::ruma::events::receipt::ReceiptThread;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::events::tag::{TagInfo, TagName};
use matrix_sdk::{Client, Room};
use serde_json::Value;

use crate::common::TestServer;
use crate::sdk::sdk_user;

/// Alice creates a room and Bob joins it; both clients have synced once.
async fn pair(server: &TestServer) -> (Client, Client, Room, Room, String, String) {
    let alice = sdk_user(server, "alice").await;
    let bob = sdk_user(server, "bob").await;
    let room = alice
        .create_room(matrix_sdk::ruma::api::client::room::create_room::v3::Request::new())
        .await
        .unwrap();
    room.invite_user_by_id(bob.user_id().unwrap())
        .await
        .unwrap();
    bob.sync_once(SyncSettings::default()).await.unwrap();
    let bob_room = bob.join_room_by_id(room.room_id()).await.unwrap();
    let alice_token = alice
        .sync_once(SyncSettings::default())
        .await
        .unwrap()
        .next_batch;
    let bob_token = bob
        .sync_once(SyncSettings::default())
        .await
        .unwrap()
        .next_batch;
    (alice, bob, room, bob_room, alice_token, bob_token)
}

fn ephemeral_types(response: &matrix_sdk::sync::SyncResponse, room: &Room) -> Vec<Value> {
    response
        .rooms
        .joined
        .get(room.room_id())
        .map(|r| {
            r.ephemeral
                .iter()
                .filter_map(|e| e.deserialize_as::<Value>().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn typing_and_read_receipts_reach_the_other_side() {
    let server = TestServer::start().await;
    let (alice, bob, room, bob_room, _, bob_token) = pair(&server).await;

    room.typing_notice(true).await.unwrap();
    let response = bob
        .sync_once(SyncSettings::default().token(bob_token))
        .await
        .unwrap();
    let ephemeral = ephemeral_types(&response, &bob_room);
    let typing = ephemeral
        .iter()
        .find(|e| e["type"] == "m.typing")
        .expect("m.typing");
    assert_eq!(
        typing["content"]["user_ids"][0],
        alice.user_id().unwrap().as_str()
    );

    let sent = room
        .send(RoomMessageEventContent::text_plain("read me"))
        .await
        .unwrap();
    let bob_token = bob
        .sync_once(SyncSettings::default().token(response.next_batch))
        .await
        .unwrap()
        .next_batch;
    bob_room
        .send_single_receipt(
            ReceiptType::Read,
            ReceiptThread::Unthreaded,
            sent.response.event_id.clone(),
        )
        .await
        .unwrap();
    let response = alice.sync_once(SyncSettings::default()).await.unwrap();
    let receipts = ephemeral_types(&response, &room);
    let receipt = receipts
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .expect("m.receipt");
    let read = &receipt["content"][sent.response.event_id.as_str()]["m.read"];
    assert!(
        read.get(bob.user_id().unwrap().as_str()).is_some(),
        "{receipt}"
    );
    let _ = bob_token;
}

#[tokio::test]
async fn presence_account_data_tags_and_to_device() {
    use matrix_sdk::ruma::api::client::presence::set_presence;
    use matrix_sdk::ruma::api::client::to_device::send_event_to_device;
    use matrix_sdk::ruma::events::AnyToDeviceEventContent;
    use matrix_sdk::ruma::presence::PresenceState;
    use matrix_sdk::ruma::serde::Raw;
    use matrix_sdk::ruma::to_device::DeviceIdOrAllDevices;
    use matrix_sdk::ruma::{OwnedTransactionId, events::ToDeviceEventType};
    use std::collections::BTreeMap;

    let server = TestServer::start().await;
    let (alice, bob, room, _bob_room, alice_token, bob_token) = pair(&server).await;

    // Presence of a room-mate.
    let mut request = set_presence::v3::Request::new(
        alice.user_id().unwrap().to_owned(),
        PresenceState::Unavailable,
    );
    request.status_msg = Some("in a meeting".into());
    alice.send(request).await.unwrap();
    let response = bob
        .sync_once(
            SyncSettings::default()
                .token(bob_token)
                .set_presence(PresenceState::Online),
        )
        .await
        .unwrap();
    let presence: Vec<Value> = response
        .presence
        .iter()
        .filter_map(|e| e.deserialize_as::<Value>().ok())
        .collect();
    let seen = presence
        .iter()
        .find(|e| e["sender"] == alice.user_id().unwrap().as_str())
        .expect("alice's presence");
    assert_eq!(seen["content"]["status_msg"], "in a meeting");
    let bob_token = response.next_batch;

    // Account data and tags round-trip to the owner's next sync.
    room.set_tag(TagName::Favorite, TagInfo::new())
        .await
        .unwrap();
    let mut direct = matrix_sdk::ruma::events::direct::DirectEventContent::default();
    direct.insert(
        bob.user_id().unwrap().to_owned().into(),
        vec![room.room_id().to_owned()],
    );
    alice.account().set_account_data(direct).await.unwrap();
    let response = alice
        .sync_once(SyncSettings::default().token(alice_token))
        .await
        .unwrap();
    let joined = response.rooms.joined.get(room.room_id()).unwrap();
    let tags: Vec<Value> = joined
        .account_data
        .iter()
        .filter_map(|e| e.deserialize_as::<Value>().ok())
        .collect();
    assert!(
        tags.iter()
            .any(|e| e["type"] == "m.tag" && e["content"]["tags"].get("m.favourite").is_some())
    );
    let global: Vec<Value> = response
        .account_data
        .iter()
        .filter_map(|e| e.deserialize_as::<Value>().ok())
        .collect();
    let direct = global
        .iter()
        .find(|e| e["type"] == "m.direct")
        .expect("m.direct");
    assert_eq!(
        direct["content"][bob.user_id().unwrap().as_str()][0],
        room.room_id().as_str()
    );

    // A to-device message arrives exactly once.
    let content: Raw<AnyToDeviceEventContent> = Raw::from_json(
        serde_json::value::to_raw_value(&serde_json::json!({ "hello": "bob" })).unwrap(),
    );
    let mut messages = BTreeMap::new();
    let mut per_device = BTreeMap::new();
    per_device.insert(DeviceIdOrAllDevices::AllDevices, content);
    messages.insert(bob.user_id().unwrap().to_owned(), per_device);
    let request = send_event_to_device::v3::Request::new_raw(
        ToDeviceEventType::from("org.example.ping"),
        OwnedTransactionId::from("ping1"),
        messages,
    );
    alice.send(request).await.unwrap();
    let response = bob
        .sync_once(SyncSettings::default().token(bob_token))
        .await
        .unwrap();
    assert_eq!(response.to_device.len(), 1);
    let again = bob
        .sync_once(
            SyncSettings::default()
                .token(response.next_batch)
                .timeout(std::time::Duration::from_millis(200)),
        )
        .await
        .unwrap();
    assert!(again.to_device.is_empty());
}
