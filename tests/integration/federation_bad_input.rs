//! Every federation route against bad input: requests without a signature, bodies of the wrong
//! shape, malformed identifiers. Each gets a Matrix error with a 4xx status, never a 5xx, and the
//! walk fails when a route is added without an entry here. (The client-server routes have
//! their own corpus in `bad_input`; the attack cases are in `federation_attacks`.)

use std::collections::BTreeSet;

use axum::http;
use serde_json::{Value, json};

use crate::federation_common::FederatedPair;
use crate::federation_forge::{Origin, signed_request};

/// A federation route, the methods it serves, and whether it is public (no `X-Matrix`).
struct Route {
    path: &'static str,
    methods: &'static [&'static str],
    public: bool,
}

const fn route(path: &'static str, methods: &'static [&'static str]) -> Route {
    Route {
        path,
        methods,
        public: false,
    }
}

const fn public(path: &'static str, methods: &'static [&'static str]) -> Route {
    Route {
        path,
        methods,
        public: true,
    }
}

const ROUTES: &[Route] = &[
    public("/_matrix/federation/v1/version", &["GET"]),
    route("/_matrix/federation/v1/send/{txn_id}", &["PUT"]),
    route(
        "/_matrix/federation/v1/make_join/{room_id}/{user_id}",
        &["GET"],
    ),
    route(
        "/_matrix/federation/v2/send_join/{room_id}/{event_id}",
        &["PUT"],
    ),
    route(
        "/_matrix/federation/v1/make_leave/{room_id}/{user_id}",
        &["GET"],
    ),
    route(
        "/_matrix/federation/v2/send_leave/{room_id}/{event_id}",
        &["PUT"],
    ),
    route(
        "/_matrix/federation/v1/make_knock/{room_id}/{user_id}",
        &["GET"],
    ),
    route(
        "/_matrix/federation/v1/send_knock/{room_id}/{event_id}",
        &["PUT"],
    ),
    route(
        "/_matrix/federation/v2/invite/{room_id}/{event_id}",
        &["PUT"],
    ),
    route("/_matrix/federation/v1/query/directory", &["GET"]),
    route("/_matrix/federation/v1/query/profile", &["GET"]),
    route("/_matrix/federation/v1/user/devices/{user_id}", &["GET"]),
    route("/_matrix/federation/v1/user/keys/query", &["POST"]),
    route("/_matrix/federation/v1/user/keys/claim", &["POST"]),
    route("/_matrix/federation/v1/event/{event_id}", &["GET"]),
    route("/_matrix/federation/v1/state/{room_id}", &["GET"]),
    route("/_matrix/federation/v1/state_ids/{room_id}", &["GET"]),
    route(
        "/_matrix/federation/v1/event_auth/{room_id}/{event_id}",
        &["GET"],
    ),
    route(
        "/_matrix/federation/v1/timestamp_to_event/{room_id}",
        &["GET"],
    ),
    route("/_matrix/federation/v1/backfill/{room_id}", &["GET"]),
    route(
        "/_matrix/federation/v1/get_missing_events/{room_id}",
        &["POST"],
    ),
    route("/_matrix/federation/v1/publicRooms", &["GET", "POST"]),
    route("/_matrix/federation/v1/hierarchy/{room_id}", &["GET"]),
    // Authenticated by the OpenID token in its query, not by a server signature.
    public("/_matrix/federation/v1/openid/userinfo", &["GET"]),
    route("/_matrix/federation/v1/media/download/{media_id}", &["GET"]),
    route(
        "/_matrix/federation/v1/media/thumbnail/{media_id}",
        &["GET"],
    ),
    public("/_matrix/key/v2/server", &["GET"]),
    public("/_matrix/key/v2/query/{server_name}", &["GET"]),
    public("/_matrix/key/v2/query", &["POST"]),
];

/// The template with well-formed identifiers that name nothing on the server.
fn fill(template: &str, good: &str) -> String {
    template
        .replace("{txn_id}", "txn-bad-input")
        .replace("{room_id}", &format!("!nowhere:{good}"))
        .replace("{user_id}", &format!("@nobody:{good}"))
        .replace("{event_id}", "$nothinghere")
        .replace("{media_id}", "nomedia")
        .replace("{server_name}", good)
}

/// A well-formed query string for the routes that require one.
fn query_for(template: &str, good: &str) -> String {
    let query = match template
        .rsplit('/')
        .find(|part| !part.starts_with('{') && !part.is_empty())
    {
        Some("directory") => format!("room_alias=%23nothing:{good}"),
        Some("profile") => format!("user_id=@nobody:{good}"),
        Some("timestamp_to_event") => "ts=1&dir=f".to_owned(),
        Some("backfill") => "v=$nothinghere&limit=1".to_owned(),
        Some("make_join" | "make_knock") => "ver=10&ver=11&ver=12".to_owned(),
        Some("userinfo") => "access_token=nothing".to_owned(),
        Some("state" | "state_ids") => "event_id=$nothinghere".to_owned(),
        Some("thumbnail") => "width=32&height=32&method=scale".to_owned(),
        _ => return String::new(),
    };
    format!("?{query}")
}

/// The template with malformed identifiers.
fn garble(template: &str) -> String {
    template
        .replace("{txn_id}", "%00")
        .replace("{room_id}", "not-a-room")
        .replace("{user_id}", "not-a-user")
        .replace("{event_id}", "not-an-event")
        .replace("{media_id}", "..%2F..%2Fetc")
        .replace("{server_name}", "not%20a%20server")
}

fn assert_matrix_error(label: &str, status: u16, body: &Value) {
    assert!(
        (400..500).contains(&status),
        "{label}: expected a 4xx, got {status} {body}"
    );
    assert!(
        body["errcode"]
            .as_str()
            .is_some_and(|c| c.starts_with("M_")),
        "{label}: not a Matrix error: {status} {body}"
    );
}

#[tokio::test]
async fn federation_routes_refuse_bad_input() {
    let pair = FederatedPair::start().await;
    let (a, b) = (&pair.a, &pair.b);

    // The table covers the federation routes exactly.
    let served: BTreeSet<String> = roost::api::route_templates()
        .into_iter()
        .filter(|r| r.starts_with("/_matrix/federation") || r.starts_with("/_matrix/key"))
        .collect();
    let listed: BTreeSet<String> = ROUTES.iter().map(|r| r.path.to_owned()).collect();
    assert_eq!(served, listed, "federation routes and this table differ");

    let origin = Origin::new(b);
    for route in ROUTES {
        for method in route.methods {
            let method = http::Method::from_bytes(method.as_bytes()).expect("a method");
            let path = format!(
                "{}{}",
                fill(route.path, a.name.as_str()),
                query_for(route.path, a.name.as_str())
            );
            let has_body = method == http::Method::PUT || method == http::Method::POST;
            let label = format!("{method} {}", route.path);

            if !route.public {
                // No signature at all.
                let request = a.http.request(
                    reqwest::Method::from_bytes(method.as_str().as_bytes()).expect("method"),
                    a.url(&path),
                );
                let request = if has_body {
                    request.json(&json!({}))
                } else {
                    request
                };
                let response = request.send().await.expect("sent");
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                assert_eq!(status, 401, "{label} unsigned: {body}");
                assert_eq!(body["errcode"], "M_UNAUTHORIZED", "{label}: {body}");
            }

            // Signed (as B), bodies of the wrong shape.
            if has_body {
                for bad in [json!([]), json!("text"), json!(42), json!({ "pdus": "x" })] {
                    let (status, body) = signed_request(
                        a,
                        origin.name(),
                        origin.key(),
                        None,
                        method.clone(),
                        &path,
                        Some(&bad),
                    )
                    .await;
                    if status == 200 {
                        // An object with unknown fields is fine where nothing is required.
                        assert!(bad.is_object(), "{label} with {bad}: 200 {body}");
                        continue;
                    }
                    assert_matrix_error(&format!("{label} with {bad}"), status, &body);
                }
            }

            // Malformed identifiers in the path.
            if route.path.contains('{') {
                let garbled = garble(route.path);
                let body = has_body.then(|| json!({}));
                let (status, answer) = signed_request(
                    a,
                    origin.name(),
                    origin.key(),
                    None,
                    method.clone(),
                    &garbled,
                    body.as_ref(),
                )
                .await;
                assert_matrix_error(&format!("{label} garbled"), status, &answer);
            }
        }
    }

    // The servers still work: B reaches A's version and keys.
    let (status, _) = a.get("/_matrix/federation/v1/version", None).await;
    assert_eq!(status, 200);
}
