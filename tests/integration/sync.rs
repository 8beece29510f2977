//! `/sync`: matrix-sdk's sync loop against Roost, the long poll, tokens, sections and filters.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{
    TestServer, User, create_room, errcode, join, send_text, spawn_long_poll, user,
};

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn sync(server: &TestServer, u: &User, query: &str) -> (u16, Value) {
    server
        .get(&format!("/_matrix/client/v3/sync?{query}"), Some(&u.token))
        .await
}

fn timeline_bodies(body: &Value, room: &str) -> Vec<String> {
    body["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn matrix_sdk_syncs_rooms_and_messages() {
    use matrix_sdk::config::SyncSettings;
    use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;

    let server = TestServer::start().await;
    let alice = crate::sdk::sdk_user(&server, "alice").await;
    let bob = crate::sdk::sdk_user(&server, "bob").await;
    let room = alice
        .create_room(matrix_sdk::ruma::api::client::room::create_room::v3::Request::new())
        .await
        .unwrap();
    room.invite_user_by_id(bob.user_id().unwrap())
        .await
        .unwrap();

    // Bob's sync shows the invitation; he joins through the SDK.
    let response = bob.sync_once(SyncSettings::default()).await.unwrap();
    assert!(response.rooms.invited.contains_key(room.room_id()));
    bob.join_room_by_id(room.room_id()).await.unwrap();
    let token = bob
        .sync_once(SyncSettings::default())
        .await
        .unwrap()
        .next_batch;

    room.send(RoomMessageEventContent::text_plain("hello bob"))
        .await
        .unwrap();
    let response = bob
        .sync_once(SyncSettings::default().token(token))
        .await
        .unwrap();
    let joined = response
        .rooms
        .joined
        .get(room.room_id())
        .expect("the room in the sync");
    let bodies: Vec<String> = joined
        .timeline
        .events
        .iter()
        .filter_map(|e| e.raw().deserialize_as::<Value>().ok())
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(bodies, vec!["hello bob"]);
    // The SDK's own room list knows the room and its members now.
    let bob_room = bob.get_room(room.room_id()).expect("bob knows the room");
    assert_eq!(bob_room.joined_members_count(), 2);
}

#[tokio::test]
async fn long_poll_wakes_on_a_message_and_times_out_empty() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    assert_eq!(join(&server, &bob, &room).await.0, 200);
    let (status, first) = sync(&server, &bob, "").await;
    assert_eq!(status, 200);
    let since = first["next_batch"].as_str().unwrap().to_owned();

    // Nothing happens: the poll ends at its timeout with no rooms.
    let started = Instant::now();
    let (status, empty) = sync(&server, &bob, &format!("since={since}&timeout=300")).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(empty["rooms"]["join"].as_object().unwrap().is_empty());
    // (The token may have moved on: positions are global, e.g. a delivered receipt of Bob's own.)

    // A message wakes the waiting poll long before its 20 s timeout.
    let poll = spawn_long_poll(&server, &bob.token, &format!("since={since}&timeout=20000"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    send_text(&server, &alice, &room, "t1", "wake up").await;
    let (elapsed, body) = poll.await.unwrap();
    assert!(
        elapsed < Duration::from_secs(15),
        "woken by the message, not the timeout"
    );
    assert_eq!(timeline_bodies(&body, &room), vec!["wake up"]);
    assert_eq!(body["rooms"]["join"][&room]["timeline"]["limited"], false);
}

#[tokio::test]
async fn tokens_are_checked() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let (status, body) = sync(&server, &alice, "since=nonsense").await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = sync(&server, &alice, "since=s999999").await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = sync(&server, &alice, "filter=nope").await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = sync(
        &server,
        &alice,
        &format!("filter={}", encode("{\"room\": 5}")),
    )
    .await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"));
    let (status, body) = sync(&server, &alice, "set_presence=dancing").await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
}

#[tokio::test]
async fn limited_timelines_lazy_members_and_stored_filters() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let carol = user(&server, "carol").await;
    let room = create_room(
        &server,
        &alice,
        json!({ "preset": "public_chat", "name": "big" }),
    )
    .await;
    for u in [&bob, &carol] {
        assert_eq!(join(&server, u, &room).await.0, 200);
    }
    let (_, first) = sync(&server, &alice, "").await;
    let since = first["next_batch"].as_str().unwrap().to_owned();
    for i in 0..5 {
        send_text(&server, &bob, &room, &format!("b{i}"), &format!("m{i}")).await;
    }

    // A stored filter: two timeline events, lazy-loaded members.
    let (status, created) = server
        .post(
            &format!("/_matrix/client/v3/user/{}/filter", alice.id),
            Some(&alice.token),
            json!({ "room": { "timeline": { "limit": 2 }, "state": { "lazy_load_members": true } } }),
        )
        .await;
    assert_eq!(status, 200);
    let filter_id = created["filter_id"].as_str().unwrap().to_owned();
    let (status, stored) = server
        .get(
            &format!("/_matrix/client/v3/user/{}/filter/{filter_id}", alice.id),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(stored["room"]["timeline"]["limit"], 2);
    let (status, _) = server
        .get(
            &format!("/_matrix/client/v3/user/{}/filter/{filter_id}", alice.id),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 403);

    let (_, body) = sync(
        &server,
        &alice,
        &format!("since={since}&filter={filter_id}"),
    )
    .await;
    let section = &body["rooms"]["join"][&room];
    assert_eq!(timeline_bodies(&body, &room), vec!["m3", "m4"]);
    assert_eq!(section["timeline"]["limited"], true);
    // prev_batch continues backwards through /messages.
    let prev = section["timeline"]["prev_batch"].as_str().unwrap();
    let (_, older) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=3&from={prev}"),
            Some(&alice.token),
        )
        .await;
    let older: Vec<&str> = older["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(older, vec!["m2", "m1", "m0"]);

    // Initial sync with lazy loading: only the timeline's senders (and alice) among the members.
    let (_, initial) = sync(&server, &alice, &format!("filter={filter_id}")).await;
    let members: Vec<&str> = initial["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    assert!(members.contains(&bob.id.as_str()));
    assert!(!members.contains(&carol.id.as_str()), "{members:?}");
    let summary = &initial["rooms"]["join"][&room]["summary"];
    assert_eq!(summary["m.joined_member_count"], 3);

    // event_fields trims events.
    let inline = encode(&json!({ "event_fields": ["type", "content.body"], "room": { "timeline": { "limit": 1 } } }).to_string());
    let (_, trimmed) = sync(&server, &alice, &format!("since={since}&filter={inline}")).await;
    let event = &trimmed["rooms"]["join"][&room]["timeline"]["events"][0];
    assert_eq!(
        event,
        &json!({ "type": "m.room.message", "content": { "body": "m4" } })
    );
}

#[tokio::test]
async fn invites_and_leaves_are_reported() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let (_, first) = sync(&server, &bob, "").await;
    let since = first["next_batch"].as_str().unwrap().to_owned();
    let room = create_room(
        &server,
        &alice,
        json!({ "name": "secret plans", "invite": [bob.id], "is_direct": true }),
    )
    .await;
    let (_, body) = sync(&server, &bob, &format!("since={since}")).await;
    let invite = &body["rooms"]["invite"][&room]["invite_state"]["events"];
    let events = invite.as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "secret plans")
    );
    let own = events
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.id.as_str())
        .unwrap();
    assert_eq!(own["content"]["is_direct"], true);
    assert!(
        events.iter().any(|e| e["state_key"] == alice.id.as_str()),
        "the inviter's member event"
    );

    assert_eq!(join(&server, &bob, &room).await.0, 200);
    let since = body["next_batch"].as_str().unwrap().to_owned();
    let (_, body) = sync(&server, &bob, &format!("since={since}")).await;
    assert!(
        body["rooms"]["join"][&room]["state"]["events"]
            .as_array()
            .unwrap()
            .len()
            > 3
    );
    let since = body["next_batch"].as_str().unwrap().to_owned();

    let (status, _) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            Some(&alice.token),
            json!({ "user_id": bob.id }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = sync(&server, &bob, &format!("since={since}")).await;
    let left = &body["rooms"]["leave"][&room]["timeline"]["events"];
    assert!(
        left.as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.member"
                && e["state_key"] == bob.id.as_str()
                && e["content"]["membership"] == "leave")
    );
    assert!(body["rooms"]["join"].get(&room).is_none());
}

#[tokio::test]
async fn account_data_tags_and_ignored_users_sync() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    assert_eq!(join(&server, &bob, &room).await.0, 200);
    let (_, first) = sync(&server, &alice, "").await;
    let since = first["next_batch"].as_str().unwrap().to_owned();

    let put = |path: String, body: Value| {
        let http = server.http.clone();
        let url = server.url(&path);
        let token = alice.token.clone();
        async move {
            http.put(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let base = format!("/_matrix/client/v3/user/{}", alice.id);
    assert_eq!(
        put(
            format!("{base}/account_data/org.example.theme"),
            json!({ "dark": true })
        )
        .await,
        200
    );
    assert_eq!(
        put(
            format!("{base}/rooms/{room}/tags/u.work"),
            json!({ "order": 0.5 })
        )
        .await,
        200
    );

    // A long poll is woken by account data too.
    let (_, body) = sync(&server, &alice, &format!("since={since}&timeout=10000")).await;
    let global = body["account_data"]["events"].as_array().unwrap();
    assert!(
        global
            .iter()
            .any(|e| e["type"] == "org.example.theme" && e["content"]["dark"] == true)
    );
    let room_data = body["rooms"]["join"][&room]["account_data"]["events"]
        .as_array()
        .unwrap();
    assert!(
        room_data
            .iter()
            .any(|e| e["type"] == "m.tag" && e["content"]["tags"]["u.work"]["order"] == 0.5)
    );
    let since = body["next_batch"].as_str().unwrap().to_owned();

    // Alice ignores Bob: his messages no longer reach her.
    assert_eq!(
        put(
            format!("{base}/account_data/m.ignored_user_list"),
            json!({ "ignored_users": { bob.id.clone(): {} } })
        )
        .await,
        200
    );
    send_text(&server, &bob, &room, "b1", "from bob").await;
    send_text(&server, &alice, &room, "a1", "from alice").await;
    let (_, body) = sync(&server, &alice, &format!("since={since}")).await;
    assert_eq!(timeline_bodies(&body, &room), vec!["from alice"]);
}

/// 200 clients long-poll one room; one message reaches each of them exactly once.
#[tokio::test]
async fn two_hundred_long_polls_each_get_the_message_once() {
    const CLIENTS: usize = 200;
    let server = TestServer::start().await;
    let owner = user(&server, "owner").await;
    let room = create_room(&server, &owner, json!({ "preset": "public_chat" })).await;
    let mut members = Vec::new();
    for chunk in (0..CLIENTS).collect::<Vec<_>>().chunks(25) {
        let joined = futures_util::future::join_all(chunk.iter().map(|i| {
            let server = &server;
            let room = room.clone();
            async move {
                let u = user(server, &format!("member{i}")).await;
                assert_eq!(join(server, &u, &room).await.0, 200);
                let (_, body) = sync(server, &u, "").await;
                (u, body["next_batch"].as_str().unwrap().to_owned())
            }
        }))
        .await;
        members.extend(joined);
    }
    // Everyone's token is now before the message; all poll at once.
    let polls: Vec<_> = members
        .iter()
        .map(|(u, since)| {
            let http = server.http.clone();
            let base = server.url("/_matrix/client/v3/sync");
            let token = u.token.clone();
            let mut since = since.clone();
            tokio::spawn(async move {
                let mut bodies = Vec::new();
                // Bounded: a poll may first return for other members' joins.
                for _ in 0..5 {
                    let body: Value = http
                        .get(format!("{base}?since={since}&timeout=30000"))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    since = body["next_batch"].as_str().unwrap().to_owned();
                    let found: Vec<String> = body["rooms"]["join"]
                        .as_object()
                        .into_iter()
                        .flat_map(|rooms| rooms.values())
                        .flat_map(|r| {
                            r["timeline"]["events"]
                                .as_array()
                                .cloned()
                                .unwrap_or_default()
                        })
                        .filter(|e| e["type"] == "m.room.message")
                        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                        .collect();
                    let done = !found.is_empty();
                    bodies.extend(found);
                    if done {
                        break;
                    }
                }
                (bodies, since)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = send_text(&server, &owner, &room, "once", "to everyone").await;
    assert_eq!(status, 200);
    let mut deliveries = 0;
    for (poll, (u, _)) in polls.into_iter().zip(&members) {
        let (bodies, since) = poll.await.unwrap();
        assert_eq!(bodies, vec!["to everyone"]);
        deliveries += bodies.len();
        // And never again with the new token.
        let (_, again) = sync(&server, u, &format!("since={since}")).await;
        assert!(timeline_bodies(&again, &room).is_empty());
    }
    assert_eq!(deliveries, CLIENTS);
}
