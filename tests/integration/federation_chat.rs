//! The Chat API over federation: a group of another server, seen by a Chat API user as an
//! invitation, is joined or declined through that server.

use serde_json::json;

use crate::chat_common::{code, enc, get, post, signup};
use crate::common::{User, create_room, user};
use crate::federation_common::{FederatedPair, sync_from};

fn membership_of(sync: &serde_json::Value, room: &str, who: &str) -> Option<String> {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()?
        .iter()
        .rev()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == who)
        .and_then(|e| e["content"]["membership"].as_str())
        .map(str::to_owned)
}

#[tokio::test]
async fn chat_api_user_joins_and_declines_groups_of_another_server() {
    let mut pair = FederatedPair::start().await;
    let alice = user(&pair.a, "alice").await;
    let bob = signup(&pair.b, "bob").await;
    let bob_matrix = User {
        token: bob.token.clone(),
        id: bob.user_id.clone(),
    };

    // Alice (a Matrix user of the first server) invites Bob (a Chat API user of the second) to
    // two rooms; each shows up in Bob's groups as an invitation.
    let hikers = create_room(
        &pair.a,
        &alice,
        json!({ "preset": "private_chat", "name": "Hikers", "invite": [bob.user_id] }),
    )
    .await;
    let runners = create_room(
        &pair.a,
        &alice,
        json!({ "preset": "private_chat", "name": "Runners", "invite": [bob.user_id] }),
    )
    .await;
    let climbers = create_room(
        &pair.a,
        &alice,
        json!({ "preset": "private_chat", "name": "Climbers", "invite": [bob.user_id] }),
    )
    .await;
    sync_from(&pair.b, &bob_matrix, None, |sync| {
        [&hikers, &climbers, &runners]
            .iter()
            .all(|room| !sync["rooms"]["invite"][room.as_str()].is_null())
    })
    .await;
    let (status, body) = get(&pair.b, "/groups", &bob.token).await;
    assert_eq!(status, 200, "{body}");
    let invited: Vec<_> = body["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter(|g| g["my_membership"] == "invite")
        .map(|g| g["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        invited.contains(&hikers) && invited.contains(&climbers),
        "{body}"
    );

    // Joining goes through Alice's server; the group then has its name and both members.
    let (status, body) = post(
        &pair.b,
        &format!("/groups/{}/join", enc(&hikers)),
        &bob.token,
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["my_membership"], "join", "{body}");
    assert_eq!(body["name"], "Hikers", "{body}");
    sync_from(&pair.a, &alice, None, |sync| {
        membership_of(sync, &hikers, &bob.user_id).as_deref() == Some("join")
    })
    .await;

    // Declining goes through Alice's server too: she sees Bob's invite rejected, and the group
    // is gone from Bob's list.
    let (status, body) = post(
        &pair.b,
        &format!("/groups/{}/leave", enc(&climbers)),
        &bob.token,
        json!({}),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    sync_from(&pair.a, &alice, None, |sync| {
        membership_of(sync, &climbers, &bob.user_id).as_deref() == Some("leave")
    })
    .await;
    let (status, body) = get(&pair.b, "/groups", &bob.token).await;
    assert_eq!(status, 200, "{body}");
    let mut ids: Vec<_> = body["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g["id"].clone())
        .collect();
    ids.sort_by_key(|id| id.to_string());
    let mut expected = vec![json!(hikers), json!(runners)];
    expected.sort_by_key(|id| id.to_string());
    assert_eq!(ids, expected, "{body}");

    // With Alice's server down, accepting its invitation fails as unreachable and changes
    // nothing: the invitation is still there to accept later.
    pair.a.stop().await;
    let (status, body) = post(
        &pair.b,
        &format!("/groups/{}/join", enc(&runners)),
        &bob.token,
        json!({}),
    )
    .await;
    assert_eq!((status, code(&body)), (502, "unreachable"), "{body}");
    let (status, body) = get(&pair.b, &format!("/groups/{}", enc(&runners)), &bob.token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["my_membership"], "invite", "{body}");
}
