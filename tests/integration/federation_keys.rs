//! Server keys over real TLS: a server's own key response, fetching and caching another
//! server's keys, and notaries (`trusted_key_servers`) vouching for a server that cannot be
//! reached itself.

use serde_json::Value;

use crate::federation_common::{FederatedPair, FederatedServer};

fn services(server: &FederatedServer) -> std::sync::Arc<roost::service::Services> {
    server.server.as_ref().expect("running").services()
}

/// The key IDs of a key response.
fn key_ids(response: &Value) -> Vec<String> {
    response["verify_keys"]
        .as_object()
        .map(|keys| keys.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn federation_keys_are_published_fetched_and_notarised() {
    let mut pair = FederatedPair::start().await;
    let (a, b) = (&pair.a, &pair.b);

    // A's own response: its current key, valid for a while, signed by A.
    let (status, own) = a.get("/_matrix/key/v2/server", None).await;
    assert_eq!(status, 200, "{own}");
    assert_eq!(own["server_name"], a.name.as_str());
    let ids = key_ids(&own);
    assert_eq!(ids.len(), 1, "{own}");
    let now = roost::util::now_ms();
    let valid_until = own["valid_until_ts"].as_u64().unwrap_or(0);
    assert!(valid_until > now + 3_600_000, "{own}");
    assert!(
        own["signatures"][a.name.as_str()][&ids[0]].is_string(),
        "{own}"
    );

    // B fetches A's key over TLS and caches it.
    let services_b = services(b);
    let found = services_b
        .federation
        .server_keys(&a.name, &ids, Some(now))
        .await
        .expect("fetch A's keys");
    assert_eq!(found.len(), 1);
    assert!(
        services_b
            .federation
            .keys
            .cached(&a.name, &ids[0])
            .unwrap()
            .is_some()
    );
    // A key A never published is not found (and no error escapes).
    let unknown = vec!["ed25519:never".to_owned()];
    let none = services_b
        .federation
        .server_keys(&a.name, &unknown, Some(now))
        .await
        .expect("a lookup of an unknown key");
    assert!(none.is_empty());

    // B as a notary: A's response, countersigned by B.
    let (status, notarised) = b
        .get(&format!("/_matrix/key/v2/query/{}", a.name), None)
        .await;
    assert_eq!(status, 200, "{notarised}");
    let response = &notarised["server_keys"][0];
    assert_eq!(response["server_name"], a.name.as_str());
    assert!(
        response["signatures"][a.name.as_str()].is_object(),
        "{response}"
    );
    assert!(
        response["signatures"][b.name.as_str()].is_object(),
        "{response}"
    );
    let (status, batch) = b
        .post(
            "/_matrix/key/v2/query",
            None,
            serde_json::json!({ "server_keys": { a.name.as_str(): {} } }),
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(
        batch["server_keys"].as_array().map(Vec::len),
        Some(1),
        "{batch}"
    );
    // Bad input: not a server name; not JSON.
    let (status, body) = b.get("/_matrix/key/v2/query/not%20a%20server", None).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = b
        .post(
            "/_matrix/key/v2/query",
            None,
            serde_json::json!({ "server_keys": "nope" }),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // C trusts B as a notary. With A down, C still gets A's keys, through B.
    let b_name = b.name.to_string();
    let c = FederatedServer::start_with(&pair.ca, |config| {
        config.trusted_key_servers = vec![b_name];
    })
    .await;
    pair.a.stop().await;
    let through_notary = services(&c)
        .federation
        .server_keys(&pair.a.name, &ids, Some(now))
        .await
        .expect("keys through the notary");
    assert_eq!(through_notary.len(), 1, "B vouched for A's key");
    assert_eq!(
        through_notary.get(&ids[0]).map(|k| k.encode()),
        found.get(&ids[0]).map(|k| k.encode())
    );
}

#[tokio::test]
async fn federation_keys_of_an_unreachable_server_without_notary_are_not_found() {
    let mut pair = FederatedPair::start().await;
    let (_, own) = pair.a.get("/_matrix/key/v2/server", None).await;
    let ids = key_ids(&own);
    pair.a.stop().await;
    let found = services(&pair.b)
        .federation
        .server_keys(&pair.a.name, &ids, Some(roost::util::now_ms()))
        .await
        .expect("the lookup itself succeeds");
    assert!(found.is_empty());
}
