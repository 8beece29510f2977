//! Relations: replies, edits, reactions, threads and references, `/relations`, `/threads` and the
//! bundled aggregations every read path carries.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestServer, User, create_room, errcode, join, send_text, user};
use crate::sdk::sdk_user;

async fn send(
    server: &TestServer,
    u: &User,
    room: &str,
    kind: &str,
    content: Value,
) -> (u16, Value) {
    let txn = format!("t{}", rand_suffix());
    server
        .call(
            Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room}/send/{kind}/{txn}"),
            Some(&u.token),
            Some(content),
        )
        .await
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn send_ok(server: &TestServer, u: &User, room: &str, kind: &str, content: Value) -> String {
    let (status, body) = send(server, u, room, kind, content).await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().unwrap().to_owned()
}

async fn text(server: &TestServer, u: &User, room: &str, body: &str) -> String {
    let (status, resp) = send_text(server, u, room, &format!("x{}", rand_suffix()), body).await;
    assert_eq!(status, 200, "{resp}");
    resp["event_id"].as_str().unwrap().to_owned()
}

fn reaction(target: &str, key: &str) -> Value {
    json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": target, "key": key } })
}

fn in_thread(root: &str, body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body, "m.relates_to": {
        "rel_type": "m.thread", "event_id": root, "is_falling_back": true,
        "m.in_reply_to": { "event_id": root } } })
}

fn edit(target: &str, body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": format!("* {body}"),
        "m.new_content": { "msgtype": "m.text", "body": body },
        "m.relates_to": { "rel_type": "m.replace", "event_id": target } })
}

async fn redact(server: &TestServer, u: &User, room: &str, event: &str) {
    let (status, body) = server
        .call(
            Method::PUT,
            &format!(
                "/_matrix/client/v3/rooms/{room}/redact/{event}/r{}",
                rand_suffix()
            ),
            Some(&u.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn event(server: &TestServer, u: &User, room: &str, id: &str) -> Value {
    let (status, body) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{id}"),
            Some(&u.token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// A public room of `alice` that `bob` joined.
async fn shared_room(server: &TestServer, alice: &User, bob: &User) -> String {
    let room = create_room(server, alice, json!({ "preset": "public_chat" })).await;
    assert_eq!(join(server, bob, &room).await.0, 200);
    room
}

fn ids(chunk: &Value) -> Vec<String> {
    chunk
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Pages through `/relations` with `query`, returning every event ID in order.
async fn walk(server: &TestServer, u: &User, path: &str, query: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..50 {
        let mut url = format!("{path}?{query}");
        if let Some(from) = &from {
            url.push_str(&format!("&from={from}"));
        }
        let (status, body) = server.get(&url, Some(&u.token)).await;
        assert_eq!(status, 200, "{body}");
        out.extend(ids(&body["chunk"]));
        match body["next_batch"].as_str() {
            Some(next) => from = Some(next.to_owned()),
            None => return out,
        }
    }
    panic!("pagination did not end");
}

#[tokio::test]
async fn relations_paginate_in_both_directions_with_filters_and_recursion() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let room = shared_room(&server, &alice, &bob).await;
    let root = text(&server, &alice, &room, "root").await;
    let mut children = Vec::new();
    for i in 0..23 {
        children.push(
            send_ok(
                &server,
                &bob,
                &room,
                "m.reaction",
                reaction(&root, &format!("k{i}")),
            )
            .await,
        );
    }
    let mut thread = Vec::new();
    for i in 0..4 {
        let id = send_ok(
            &server,
            &alice,
            &room,
            "m.room.message",
            in_thread(&root, &format!("t{i}")),
        )
        .await;
        children.push(id.clone());
        thread.push(id);
    }
    // An unrelated message and a plain reply are not children in /relations.
    text(&server, &bob, &room, "unrelated").await;
    send_ok(
        &server,
        &bob,
        &room,
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "re",
        "m.relates_to": { "m.in_reply_to": { "event_id": root } } }),
    )
    .await;
    // An edit of a thread reply is a grandchild.
    let grandchild = send_ok(
        &server,
        &alice,
        &room,
        "m.room.message",
        edit(&thread[0], "t0!"),
    )
    .await;

    let path = format!("/_matrix/client/v1/rooms/{room}/relations/{root}");
    let mut newest_first = children.clone();
    newest_first.reverse();
    assert_eq!(walk(&server, &bob, &path, "limit=10").await, newest_first);
    assert_eq!(walk(&server, &bob, &path, "limit=7&dir=f").await, children);
    assert_eq!(
        walk(
            &server,
            &bob,
            &format!("{path}/m.annotation"),
            "limit=5&dir=f"
        )
        .await,
        children[..23]
    );
    assert_eq!(
        walk(
            &server,
            &bob,
            &format!("{path}/m.thread/m.room.message"),
            "dir=f"
        )
        .await,
        thread
    );
    assert!(
        walk(&server, &bob, &format!("{path}/m.thread/m.reaction"), "")
            .await
            .is_empty()
    );

    // recurse=true adds the grandchild and says how deep it went.
    let (status, body) = server
        .get(
            &format!("{path}?dir=f&limit=100&recurse=true"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200);
    let mut with_grandchild = children.clone();
    with_grandchild.push(grandchild.clone());
    assert_eq!(ids(&body["chunk"]), with_grandchild);
    assert_eq!(body["recursion_depth"], 3);
    let (_, body) = server
        .get(&format!("{path}?limit=100"), Some(&bob.token))
        .await;
    assert!(body.get("recursion_depth").is_none());
    assert!(!ids(&body["chunk"]).contains(&grandchild));

    // Every event carries bundles: the thread reply carries its edit.
    let (_, body) = server
        .get(&format!("{path}/m.thread?dir=f&limit=1"), Some(&bob.token))
        .await;
    assert_eq!(
        body["chunk"][0]["unsigned"]["m.relations"]["m.replace"]["event_id"],
        grandchild.as_str()
    );

    // Bad input.
    for query in [
        "dir=x",
        "limit=0",
        "from=garbage",
        "limit=-1",
        "recurse=maybe",
    ] {
        let (status, body) = server
            .get(&format!("{path}?{query}"), Some(&bob.token))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
    }
    let (status, _) = server
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/relations/notanevent"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 400);
    // An outsider sees nothing, not even that the event exists.
    let carol = user(&server, "carol").await;
    let private = create_room(&server, &alice, json!({})).await;
    let secret = text(&server, &alice, &private, "secret").await;
    let (status, body) = server
        .get(
            &format!("/_matrix/client/v1/rooms/{private}/relations/{secret}"),
            Some(&carol.token),
        )
        .await;
    assert!(status == 403 || status == 404, "{status} {body}");
    let (status, _) = server
        .get(
            &format!("/_matrix/client/v1/rooms/{private}/threads"),
            Some(&carol.token),
        )
        .await;
    assert!(status == 403 || status == 404);
}

#[tokio::test]
async fn relation_rules_are_enforced_on_send() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let room = shared_room(&server, &alice, &bob).await;
    let other = shared_room(&server, &alice, &bob).await;
    let root = text(&server, &alice, &room, "root").await;

    // The same reaction twice is refused, until the first is redacted.
    let first = send_ok(&server, &bob, &room, "m.reaction", reaction(&root, "👍")).await;
    let (status, body) = send(&server, &bob, &room, "m.reaction", reaction(&root, "👍")).await;
    assert_eq!(
        (status, errcode(&body)),
        (400, "M_DUPLICATE_ANNOTATION"),
        "{body}"
    );
    // Another key, or another user, is fine.
    send_ok(&server, &bob, &room, "m.reaction", reaction(&root, "🎉")).await;
    send_ok(&server, &alice, &room, "m.reaction", reaction(&root, "👍")).await;
    redact(&server, &bob, &room, &first).await;
    send_ok(&server, &bob, &room, "m.reaction", reaction(&root, "👍")).await;
    let annotations = walk(
        &server,
        &bob,
        &format!("/_matrix/client/v1/rooms/{room}/relations/{root}/m.annotation"),
        "",
    )
    .await;
    assert_eq!(annotations.len(), 3, "the redacted reaction is gone");
    assert!(!annotations.contains(&first));

    // A thread cannot start from an event that relates to another.
    let reply = send_ok(
        &server,
        &alice,
        &room,
        "m.room.message",
        in_thread(&root, "in thread"),
    )
    .await;
    let (status, body) = send(
        &server,
        &bob,
        &room,
        "m.room.message",
        in_thread(&reply, "nested"),
    )
    .await;
    assert_eq!((status, errcode(&body)), (400, "M_UNKNOWN"), "{body}");

    // Relations must stay within one room.
    let (status, body) = send(&server, &bob, &other, "m.reaction", reaction(&root, "x")).await;
    assert_eq!((status, errcode(&body)), (400, "M_UNKNOWN"), "{body}");
    // A parent the server does not know is allowed (it may arrive later over federation).
    send_ok(
        &server,
        &bob,
        &room,
        "m.reaction",
        reaction("$unknown:localhost", "x"),
    )
    .await;
}

#[tokio::test]
async fn edits_are_bundled_only_from_the_original_sender_and_follow_redactions() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let room = shared_room(&server, &alice, &bob).await;
    let original = text(&server, &alice, &room, "I like cake").await;
    assert!(
        event(&server, &bob, &room, &original).await["unsigned"]
            .get("m.relations")
            .is_none()
    );

    let first = send_ok(
        &server,
        &alice,
        &room,
        "m.room.message",
        edit(&original, "I like pie"),
    )
    .await;
    // Bob's "edit" of Alice's message is not valid and never shown.
    send_ok(
        &server,
        &bob,
        &room,
        "m.room.message",
        edit(&original, "I hate cake"),
    )
    .await;
    // Nor is an edit without m.new_content.
    send_ok(
        &server,
        &alice,
        &room,
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "*",
        "m.relates_to": { "rel_type": "m.replace", "event_id": original } }),
    )
    .await;
    let bundled = |e: &Value| e["unsigned"]["m.relations"]["m.replace"].clone();
    let seen = event(&server, &bob, &room, &original).await;
    assert_eq!(
        seen["content"]["body"], "I like cake",
        "content is left intact"
    );
    assert_eq!(bundled(&seen)["event_id"], first.as_str());
    assert_eq!(
        bundled(&seen)["content"]["m.new_content"]["body"],
        "I like pie"
    );

    let second = send_ok(
        &server,
        &alice,
        &room,
        "m.room.message",
        edit(&original, "I like tea"),
    )
    .await;
    assert_eq!(
        bundled(&event(&server, &bob, &room, &original).await)["event_id"],
        second.as_str()
    );

    // The same bundle in /messages, /context and /sync.
    let (_, messages) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
            Some(&bob.token),
        )
        .await;
    let in_messages = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == original.as_str())
        .unwrap();
    assert_eq!(bundled(in_messages)["event_id"], second.as_str());
    let (_, context) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/context/{original}"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(bundled(&context["event"])["event_id"], second.as_str());
    let (_, sync) = server
        .get(
            "/_matrix/client/v3/sync?filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A50%7D%7D%7D",
            Some(&bob.token),
        )
        .await;
    let in_sync = sync["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == original.as_str())
        .unwrap();
    assert_eq!(bundled(in_sync)["event_id"], second.as_str());

    // Redacting the latest edit brings back the one before it.
    redact(&server, &alice, &room, &second).await;
    assert_eq!(
        bundled(&event(&server, &bob, &room, &original).await)["event_id"],
        first.as_str()
    );
    // Redacting the original drops the edit from the bundle.
    redact(&server, &alice, &room, &original).await;
    let seen = event(&server, &bob, &room, &original).await;
    assert_eq!(bundled(&seen), Value::Null);
    assert_eq!(seen["content"], json!({}));
}

#[tokio::test]
async fn thread_summaries_and_the_thread_list() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let carol = user(&server, "carol").await;
    let room = shared_room(&server, &alice, &bob).await;
    assert_eq!(join(&server, &carol, &room).await.0, 200);
    let first_root = text(&server, &alice, &room, "first root").await;
    let second_root = text(&server, &bob, &room, "second root").await;
    let a1 = send_ok(
        &server,
        &bob,
        &room,
        "m.room.message",
        in_thread(&first_root, "a1"),
    )
    .await;
    send_ok(
        &server,
        &carol,
        &room,
        "m.room.message",
        in_thread(&second_root, "b1"),
    )
    .await;
    let a2 = send_ok(
        &server,
        &carol,
        &room,
        "m.room.message",
        in_thread(&first_root, "a2"),
    )
    .await;
    let reference = send_ok(&server, &carol, &room, "m.room.message", json!({ "msgtype": "m.text",
        "body": "see above", "m.relates_to": { "rel_type": "m.reference", "event_id": first_root } })).await;

    let summary = |e: &Value| e["unsigned"]["m.relations"]["m.thread"].clone();
    let root = event(&server, &alice, &room, &first_root).await;
    assert_eq!(summary(&root)["count"], 2);
    assert_eq!(summary(&root)["latest_event"]["event_id"], a2.as_str());
    assert_eq!(summary(&root)["latest_event"]["content"]["body"], "a2");
    // Alice sent the root, so she took part.
    assert_eq!(summary(&root)["current_user_participated"], true);
    assert_eq!(
        root["unsigned"]["m.relations"]["m.reference"]["chunk"],
        json!([{ "event_id": reference }])
    );
    let for_bob = event(&server, &bob, &room, &first_root).await;
    assert_eq!(summary(&for_bob)["current_user_participated"], true);
    let dave = user(&server, "dave").await;
    assert_eq!(join(&server, &dave, &room).await.0, 200);
    let for_dave = event(&server, &dave, &room, &first_root).await;
    assert_eq!(summary(&for_dave)["current_user_participated"], false);

    // Alice ignores Carol: Carol's replies no longer count for her.
    let (status, _) = server
        .call(
            Method::PUT,
            &format!(
                "/_matrix/client/v3/user/{}/account_data/m.ignored_user_list",
                alice.id
            ),
            Some(&alice.token),
            Some(json!({ "ignored_users": { carol.id.clone(): {} } })),
        )
        .await;
    assert_eq!(status, 200);
    let root = event(&server, &alice, &room, &first_root).await;
    assert_eq!(summary(&root)["count"], 1);
    assert_eq!(summary(&root)["latest_event"]["event_id"], a1.as_str());
    assert!(root["unsigned"]["m.relations"].get("m.reference").is_none());
    assert_eq!(
        summary(&event(&server, &bob, &room, &first_root).await)["count"],
        2
    );

    // Redacting a reply takes it out of the count.
    redact(&server, &carol, &room, &a2).await;
    let for_bob = event(&server, &bob, &room, &first_root).await;
    assert_eq!(summary(&for_bob)["count"], 1);
    assert_eq!(summary(&for_bob)["latest_event"]["event_id"], a1.as_str());

    // The thread list: most recently active first, one per page.
    let threads = format!("/_matrix/client/v1/rooms/{room}/threads");
    assert_eq!(
        walk(&server, &bob, &threads, "limit=1").await,
        [first_root.clone(), second_root.clone()]
    );
    let (_, body) = server.get(&threads, Some(&dave.token)).await;
    assert_eq!(
        summary(&body["chunk"][0])["count"],
        1,
        "roots carry their bundles"
    );
    // Participation: Alice sent the first root; Dave took part in nothing.
    assert_eq!(
        walk(&server, &alice, &threads, "include=participated").await,
        vec![first_root.clone()]
    );
    assert!(
        walk(&server, &dave, &threads, "include=participated")
            .await
            .is_empty()
    );
    let new_reply = send_ok(
        &server,
        &dave,
        &room,
        "m.room.message",
        in_thread(&second_root, "b2"),
    )
    .await;
    assert_eq!(
        walk(&server, &dave, &threads, "include=participated").await,
        vec![second_root.clone()]
    );
    // A new reply moves its thread to the front.
    assert_eq!(
        walk(&server, &bob, &threads, "").await,
        [second_root.clone(), first_root.clone()]
    );
    let (_, body) = server.get(&threads, Some(&bob.token)).await;
    assert_eq!(
        summary(&body["chunk"][0])["latest_event"]["event_id"],
        new_reply.as_str()
    );
    for query in ["include=mine", "limit=0", "from=nope"] {
        let (status, _) = server
            .get(&format!("{threads}?{query}"), Some(&bob.token))
            .await;
        assert_eq!(status, 400, "{query}");
    }
}

/// Reply, edit, react and thread through matrix-sdk: the other client parses the edit and the
/// thread summary from the bundles, and finds the reaction among the relations.
#[tokio::test]
async fn reply_edit_react_and_thread_through_the_sdk() {
    use matrix_sdk::config::SyncSettings;
    use matrix_sdk::room::{IncludeRelations, RelationsOptions};
    use matrix_sdk::ruma::api::client::{membership::join_room_by_id, room::create_room};
    use matrix_sdk::ruma::events::reaction::ReactionEventContent;
    use matrix_sdk::ruma::events::relation::RelationType;
    use matrix_sdk::ruma::events::relation::{Annotation, InReplyTo, Reply, Thread};
    use matrix_sdk::ruma::events::room::message::{
        Relation, ReplacementMetadata, RoomMessageEventContent,
    };
    use matrix_sdk::ruma::events::{
        AnySyncMessageLikeEvent, AnySyncTimelineEvent, SyncMessageLikeEvent,
    };

    let server = TestServer::start().await;
    let alice = sdk_user(&server, "alice").await;
    let bob = sdk_user(&server, "bob").await;
    let mut create = create_room::v3::Request::new();
    create.preset = Some(create_room::v3::RoomPreset::PublicChat);
    let room_id = alice.send(create).await.unwrap().room_id;
    bob.send(join_room_by_id::v3::Request::new(room_id.clone()))
        .await
        .unwrap();
    alice.sync_once(SyncSettings::default()).await.unwrap();
    bob.sync_once(SyncSettings::default()).await.unwrap();
    let alice_room = alice.get_room(&room_id).unwrap();
    let bob_room = bob.get_room(&room_id).unwrap();

    let original = alice_room
        .send(RoomMessageEventContent::text_plain("I like cake"))
        .await
        .unwrap()
        .response
        .event_id;
    let mut reply = RoomMessageEventContent::text_plain("me too");
    reply.relates_to = Some(Relation::Reply(Reply::new(InReplyTo::new(
        original.clone(),
    ))));
    let reply_id = bob_room.send(reply).await.unwrap().response.event_id;
    let edit = RoomMessageEventContent::text_plain("I like chocolate cake")
        .make_replacement(ReplacementMetadata::new(original.clone(), None));
    alice_room.send(edit).await.unwrap();
    let reaction_id = bob_room
        .send(ReactionEventContent::new(Annotation::new(
            original.clone(),
            "🍰".into(),
        )))
        .await
        .unwrap()
        .response
        .event_id;
    let mut in_thread = RoomMessageEventContent::text_plain("about the cake");
    in_thread.relates_to = Some(Relation::Thread(Thread::plain(
        original.clone(),
        reply_id.clone(),
    )));
    let thread_reply = bob_room.send(in_thread).await.unwrap().response.event_id;

    // Alice's other client view: Bob reads the original and sees the edit and the thread.
    let fetched = bob_room.event(&original, None).await.unwrap();
    let parsed: AnySyncTimelineEvent = fetched.raw().deserialize().unwrap();
    let AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
        SyncMessageLikeEvent::Original(message),
    )) = parsed
    else {
        panic!("not a message");
    };
    let relations = &message.unsigned.relations;
    let replacement = relations.replace.as_ref().expect("edit bundled");
    assert_eq!(replacement.content.body(), "* I like chocolate cake");
    let new_body = match &replacement.content.relates_to {
        Some(Relation::Replacement(r)) => r.new_content.msgtype.body().to_owned(),
        other => panic!("not a replacement: {other:?}"),
    };
    assert_eq!(new_body, "I like chocolate cake");
    let thread = relations.thread.as_ref().expect("thread bundled");
    assert_eq!(u64::from(thread.count), 1);
    assert!(thread.current_user_participated);
    let latest: serde_json::Value = thread.latest_event.deserialize_as().unwrap();
    assert_eq!(latest["event_id"], thread_reply.as_str());

    // The reply points at the original.
    let reply_event: serde_json::Value = bob_room
        .event(&reply_id, None)
        .await
        .unwrap()
        .raw()
        .deserialize_as()
        .unwrap();
    assert_eq!(
        reply_event["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        original.as_str()
    );

    // Alice finds Bob's reaction among the annotations of her message.
    let reactions = alice_room
        .relations(
            original.clone(),
            RelationsOptions {
                include_relations: IncludeRelations::RelationsOfType(RelationType::Annotation),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let found: Vec<String> = reactions
        .chunk
        .iter()
        .map(|e| e.event_id().unwrap().to_string())
        .collect();
    assert_eq!(found, [reaction_id.to_string()]);

    // A second identical reaction is refused with the spec's error.
    let err = bob_room
        .send(ReactionEventContent::new(Annotation::new(
            original.clone(),
            "🍰".into(),
        )))
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("DuplicateAnnotation"),
        "{err:?}"
    );
}

#[tokio::test]
async fn aggregations_only_show_what_the_reader_may_see() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let room = shared_room(&server, &alice, &bob).await;
    let root = text(&server, &alice, &room, "root").await;
    let early = send_ok(
        &server,
        &bob,
        &room,
        "m.room.message",
        in_thread(&root, "before"),
    )
    .await;
    let (status, _) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    // After Bob left: another thread reply, an edit and a reference he must not see.
    send_ok(
        &server,
        &alice,
        &room,
        "m.room.message",
        in_thread(&root, "after"),
    )
    .await;
    send_ok(
        &server,
        &alice,
        &room,
        "m.room.message",
        edit(&root, "edited later"),
    )
    .await;
    send_ok(
        &server,
        &alice,
        &room,
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "ref",
        "m.relates_to": { "rel_type": "m.reference", "event_id": root } }),
    )
    .await;

    let seen = event(&server, &bob, &room, &root).await;
    let relations = &seen["unsigned"]["m.relations"];
    assert_eq!(relations["m.thread"]["count"], 1, "{seen}");
    assert_eq!(
        relations["m.thread"]["latest_event"]["event_id"],
        early.as_str()
    );
    assert!(relations.get("m.replace").is_none(), "{seen}");
    assert!(relations.get("m.reference").is_none(), "{seen}");
    // Alice sees everything.
    let seen = event(&server, &alice, &room, &root).await;
    assert_eq!(seen["unsigned"]["m.relations"]["m.thread"]["count"], 2);
    assert!(seen["unsigned"]["m.relations"]["m.replace"].is_object());
}
