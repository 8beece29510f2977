//! Bad input at scale: a corpus of malformed requests (broken JSON, wrong types, huge numbers,
//! deep nesting, invalid IDs and percent-encoding in paths and query strings, oversize bodies,
//! bad access tokens, wrong methods) sent to every endpoint the router serves. Every request must
//! be refused with a 4xx and a Matrix error body, the server must keep answering, and the store
//! must be exactly as it was before the corpus.
//!
//! The endpoints are listed once, in [`endpoints`]; the test fails when the router serves a path
//! or a method that the table does not list, so a new endpoint needs its corpus entry. Requests
//! go over raw HTTP/1.1 (one connection each), so that paths can carry what a URL library would
//! normalise or refuse (`..`, invalid percent-encoding, raw bytes).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{PASSWORD, TestServer, User, create_room, send_text, token, user};

/// The body limit of the test server: small, so oversize bodies are cheap to send, but larger
/// than the biggest event so that an oversize event reaches the handler.
const BODY_LIMIT: usize = 100_000;
/// Requests in flight at once.
const CONCURRENCY: usize = 8;
/// What any single request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// The methods probed on every path: those the table does not list must answer 405.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

/// How an endpoint authenticates.
#[derive(Clone, Copy, PartialEq)]
enum Access {
    /// No access token is read.
    Public,
    /// An access token is required.
    Token,
    /// An access token is optional, but must be valid when present.
    OptionalToken,
}

/// The type of a body field or query parameter, which picks its wrong values.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    Bool,
    UInt,
    Obj,
    Arr,
    /// A string out of a fixed set (query parameters).
    Enum,
    /// A stream token `s<position>` (query parameters).
    Stream,
    /// A JSON room event filter (query parameters of `/messages` and `/context`).
    Filter,
    /// A JSON filter or a filter ID (the query parameter of `/sync`).
    SyncFilter,
    /// A `/publicRooms` batch token `o<offset>` (query parameters).
    Offset,
    /// A server name (query parameters).
    Server,
}

/// Typed fields or parameters: name, type, required.
type Typed = Vec<(&'static str, Ty, bool)>;

/// One endpoint: a method on a path template, and what it reads.
struct Endpoint {
    method: &'static str,
    path: &'static str,
    access: Access,
    /// Sent with every request that does not vary the query (e.g. the required `dir=b`).
    query: &'static str,
    /// The typed query parameters: name, type, required.
    params: Typed,
    /// The JSON body: a valid example (never sent as is) and its typed fields (name, type,
    /// required), or `None` when no body is read.
    body: Option<(Value, Typed)>,
    /// Endpoint-specific bad requests.
    extra: Vec<Extra>,
}

/// An endpoint-specific bad request: path parameters overridden (raw, as sent), an optional
/// query string and an optional body.
struct Extra {
    params: Vec<(&'static str, String)>,
    query: Option<String>,
    body: Option<String>,
}

impl Endpoint {
    fn new(method: &'static str, path: &'static str, access: Access) -> Self {
        Self {
            method,
            path,
            access,
            query: "",
            params: Vec::new(),
            body: None,
            extra: Vec::new(),
        }
    }

    fn json(mut self, example: Value, fields: &[(&'static str, Ty, bool)]) -> Self {
        self.body = Some((example, fields.to_vec()));
        self
    }

    fn query(mut self, base: &'static str, params: &[(&'static str, Ty, bool)]) -> Self {
        self.query = base;
        self.params = params.to_vec();
        self
    }

    /// A bad body (with the valid path and query).
    fn bad_body(mut self, body: impl Into<String>) -> Self {
        self.extra.push(Extra {
            params: Vec::new(),
            query: None,
            body: Some(body.into()),
        });
        self
    }

    /// A bad path parameter (with the example body, if any).
    fn bad_param(mut self, name: &'static str, raw: impl Into<String>) -> Self {
        self.extra.push(Extra {
            params: vec![(name, raw.into())],
            query: None,
            body: None,
        });
        self
    }

    /// A path parameter and a body that are bad together.
    fn bad_pair(mut self, name: &'static str, raw: impl Into<String>, body: String) -> Self {
        self.extra.push(Extra {
            params: vec![(name, raw.into())],
            query: None,
            body: Some(body),
        });
        self
    }

    /// A bad query string (replacing the base one).
    fn bad_query(mut self, query: impl Into<String>) -> Self {
        self.extra.push(Extra {
            params: Vec::new(),
            query: Some(query.into()),
            body: None,
        });
        self
    }
}

/// The IDs of the test world.
struct World {
    alice: User,
    alice_device: String,
    bob: User,
    room: String,
    event: String,
    alias: String,
    filter: String,
    /// The access token of a device that logged out.
    stale_token: String,
    /// The media ID of content Alice uploaded.
    media_done: String,
    /// The media ID Bob created and has not uploaded yet.
    media_pending: String,
}

const V3: &str = "/_matrix/client/v3";

/// Every endpoint of the router, with its corpus. One entry per method and path template.
fn endpoints(w: &World) -> Vec<Endpoint> {
    use Access::*;
    use Ty::*;
    let alice = &w.alice.id;
    let bob = &w.bob.id;
    let room = &w.room;
    let event = &w.event;
    let long_name = "a".repeat(300);
    let huge_event = format!(r#"{{"body":"{}"}}"#, "x".repeat(70_000));
    let message = json!({ "msgtype": "m.text", "body": "hello" });
    vec![
        // Discovery: nothing to read but the method.
        Endpoint::new("GET", "/health", Public),
        Endpoint::new("GET", "/_matrix/client/versions", Public),
        Endpoint::new("GET", "/.well-known/matrix/client", Public),
        Endpoint::new("GET", "/.well-known/matrix/server", Public),
        Endpoint::new("GET", "/_matrix/client/v3/capabilities", Token),
        Endpoint::new("GET", "/_matrix/client/v3/voip/turnServer", Token),
        // Sessions.
        Endpoint::new("GET", "/_matrix/client/v3/login", Public),
        Endpoint::new("POST", "/_matrix/client/v3/login", Public)
            .json(
                json!({
                    "type": "m.login.password",
                    "identifier": { "type": "m.id.user", "user": alice },
                    "password": "not the password",
                }),
                &[
                    ("type", Str, true),
                    ("user", Str, false),
                    ("password", Str, false),
                    ("device_id", Str, false),
                    ("initial_device_display_name", Str, false),
                    ("refresh_token", Bool, false),
                    ("session", Str, false),
                    ("code", Str, false),
                    ("org.roost.totp_code", Str, false),
                ],
            )
            .bad_body(r#"{"type":"m.login.bogus"}"#)
            .bad_body(r#"{"type":"m.login.password","identifier":"alice","password":"x"}"#)
            .bad_body(r#"{"type":"m.login.password","identifier":{"type":"m.id.bogus"},"password":"x"}"#)
            .bad_body(r#"{"type":"m.login.password","identifier":{"type":"m.id.user"},"password":"x"}"#)
            .bad_body(r#"{"type":"m.login.password","identifier":{"type":"m.id.user","user":1},"password":"x"}"#)
            .bad_body(r#"{"type":"m.login.password","identifier":{"type":"m.id.user","user":"bad user!"},"password":"x"}"#)
            .bad_body(r#"{"type":"m.login.password","identifier":{"type":"m.id.thirdparty","medium":"msisdn","address":"1"},"password":"x"}"#)
            .bad_body(r#"{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"}}"#)
            .bad_body(r#"{"type":"org.roost.login.totp"}"#)
            .bad_body(r#"{"type":"org.roost.login.totp","session":"nonexistent","code":"000000"}"#),
        Endpoint::new("POST", "/_matrix/client/v3/logout", Token),
        Endpoint::new("POST", "/_matrix/client/v3/logout/all", Token),
        Endpoint::new("POST", "/_matrix/client/v3/refresh", Public)
            .json(
                json!({ "refresh_token": "not a refresh token" }),
                &[("refresh_token", Str, true)],
            )
            .bad_body(r#"{"refresh_token":""}"#),
        // Registration.
        Endpoint::new("POST", "/_matrix/client/v3/register", Public)
            .query("", &[("kind", Enum, false)])
            .json(
                json!({ "username": "newcomer", "password": "a good long password 1" }),
                &[
                    ("username", Str, false),
                    ("password", Str, false),
                    ("device_id", Str, false),
                    ("initial_device_display_name", Str, false),
                    ("inhibit_login", Bool, false),
                    ("refresh_token", Bool, false),
                ],
            )
            .bad_body(r#"{"username":"bad user!","password":"a good long password 1"}"#)
            .bad_body(format!(r#"{{"username":"{long_name}","password":"a good long password 1"}}"#))
            .bad_body(r#"{"username":"alice","password":"a good long password 1"}"#)
            .bad_body(r#"{"username":"newcomer"}"#)
            .bad_body(r#"{"username":"newcomer","password":"a"}"#)
            .bad_query("kind=guest"),
        Endpoint::new("GET", "/_matrix/client/v3/register/available", Public)
            .query("username=newcomer", &[("username", Str, true)])
            .bad_query("username=")
            .bad_query("username=%FF")
            .bad_query("username=a%00b")
            .bad_query("username=bad%20user")
            .bad_query("username=alice")
            .bad_query(format!("username={long_name}")),
        Endpoint::new(
            "GET",
            "/_matrix/client/v1/register/m.login.registration_token/validity",
            Public,
        )
        .query("", &[("token", Str, true)])
        .bad_query("token=%FF"),
        // E-mail (not configured on the test server, so even valid requests are refused).
        Endpoint::new("POST", "/_matrix/client/v3/register/email/requestToken", Public)
            .json(request_token_example(), REQUEST_TOKEN_FIELDS)
            .bad_body(r#"{"client_secret":"s","email":"not an address","send_attempt":1}"#),
        Endpoint::new("POST", "/_matrix/client/v3/account/password/email/requestToken", Public)
            .json(request_token_example(), REQUEST_TOKEN_FIELDS)
            .bad_body(r#"{"client_secret":"s","email":"not an address","send_attempt":1}"#),
        Endpoint::new("POST", "/_matrix/client/v3/account/3pid/email/requestToken", Public)
            .json(request_token_example(), REQUEST_TOKEN_FIELDS)
            .bad_body(r#"{"client_secret":"s","email":"not an address","send_attempt":1}"#),
        Endpoint::new("GET", roost::service::threepid::SUBMIT_PATH, Public)
            .query(
                "sid=nonexistent&client_secret=secret&token=000000",
                &[
                    ("sid", Str, true),
                    ("client_secret", Str, true),
                    ("token", Str, true),
                ],
            )
            .bad_query("sid=%FF&client_secret=%FF&token=%FF"),
        Endpoint::new("POST", roost::service::threepid::SUBMIT_PATH, Public).json(
            json!({ "sid": "nonexistent", "client_secret": "secret", "token": "000000" }),
            &[
                ("sid", Str, true),
                ("client_secret", Str, true),
                ("token", Str, true),
            ],
        ),
        // Account.
        Endpoint::new("GET", "/_matrix/client/v3/account/whoami", Token),
        Endpoint::new("POST", "/_matrix/client/v3/account/password", OptionalToken)
            .json(
                json!({ "new_password": "another good password 2", "logout_devices": false }),
                &[("new_password", Str, true), ("logout_devices", Bool, false)],
            )
            .bad_body(r#"{"new_password":"a"}"#)
            .bad_body(format!(
                r#"{{"new_password":"another good password 2","auth":{{"type":"m.login.password","identifier":{{"type":"m.id.user","user":"{alice}"}},"password":"wrong"}}}}"#
            )),
        Endpoint::new("POST", "/_matrix/client/v3/account/deactivate", Token)
            .json(json!({}), &[])
            .bad_body(r#"{"auth":"password"}"#)
            .bad_body(r#"{"auth":{"type":"m.login.bogus"}}"#)
            .bad_body(r#"{"auth":{"session":"nonexistent"}}"#)
            .bad_body(format!(
                r#"{{"auth":{{"type":"m.login.password","identifier":{{"type":"m.id.user","user":"{alice}"}},"password":"wrong"}}}}"#
            )),
        Endpoint::new("GET", "/_matrix/client/v3/account/3pid", Token),
        Endpoint::new("POST", "/_matrix/client/v3/account/3pid/add", Token).json(
            json!({ "client_secret": "secret", "sid": "nonexistent" }),
            &[("client_secret", Str, true), ("sid", Str, true)],
        ),
        Endpoint::new("POST", "/_matrix/client/v3/account/3pid/delete", Token)
            .json(
                json!({ "medium": "email", "address": "nobody@example.org" }),
                &[("medium", Str, true), ("address", Str, true)],
            )
            .bad_body(r#"{"medium":"msisdn","address":"123"}"#),
        // Devices.
        Endpoint::new("GET", "/_matrix/client/v3/devices", Token),
        Endpoint::new("GET", "/_matrix/client/v3/devices/{device_id}", Token),
        Endpoint::new("PUT", "/_matrix/client/v3/devices/{device_id}", Token)
            .json(
                json!({ "display_name": "renamed" }),
                &[("display_name", Str, false)],
            )
            .bad_body(format!(r#"{{"display_name":"{}"}}"#, "n".repeat(1000))),
        Endpoint::new("DELETE", "/_matrix/client/v3/devices/{device_id}", Token).json(json!({}), &[]),
        Endpoint::new("POST", "/_matrix/client/v3/delete_devices", Token).json(
            json!({ "devices": ["nonexistent"] }),
            &[("devices", Arr, true)],
        ),
        // Profiles.
        Endpoint::new("GET", "/_matrix/client/v3/profile/{user_id}", Public),
        Endpoint::new("GET", "/_matrix/client/v3/profile/{user_id}/{field}", Public)
            .bad_param("field", "nonexistent"),
        Endpoint::new("PUT", "/_matrix/client/v3/profile/{user_id}/{field}", Token)
            .json(json!({ "displayname": "Alice" }), &[("displayname", Str, false)])
            .bad_body("{}")
            .bad_body(format!(r#"{{"displayname":"{}"}}"#, "d".repeat(300)))
            .bad_body(r#"{"avatar_url":"mxc://localhost/x"}"#)
            .bad_pair("field", "avatar_url", r#"{"avatar_url":"https://example.org/a.png"}"#.into())
            .bad_pair("field", "avatar_url", r#"{"avatar_url":1}"#.into())
            .bad_pair("field", "org.example.big", format!(r#"{{"org.example.big":"{}"}}"#, "b".repeat(70_000))),
        Endpoint::new("DELETE", "/_matrix/client/v3/profile/{user_id}/{field}", Token),
        // Account data and tags.
        Endpoint::new("GET", "/_matrix/client/v3/user/{user}/account_data/{kind}", Token)
            .bad_param("kind", "org.example.nonexistent"),
        Endpoint::new("PUT", "/_matrix/client/v3/user/{user}/account_data/{kind}", Token)
            .json(json!({ "a": 1 }), &[])
            .bad_param("kind", "m.fully_read")
            .bad_param("kind", "m.push_rules"),
        Endpoint::new(
            "GET",
            "/_matrix/client/v3/user/{user}/rooms/{room}/account_data/{kind}",
            Token,
        )
        .bad_param("kind", "org.example.nonexistent"),
        Endpoint::new(
            "PUT",
            "/_matrix/client/v3/user/{user}/rooms/{room}/account_data/{kind}",
            Token,
        )
        .json(json!({ "a": 1 }), &[])
        .bad_param("kind", "m.fully_read"),
        Endpoint::new("GET", "/_matrix/client/v3/user/{user}/rooms/{room}/tags", Token),
        Endpoint::new("PUT", "/_matrix/client/v3/user/{user}/rooms/{room}/tags/{tag}", Token)
            .json(json!({ "order": 0.5 }), &[]),
        Endpoint::new("DELETE", "/_matrix/client/v3/user/{user}/rooms/{room}/tags/{tag}", Token),
        // Push rules, notifications, pushers.
        Endpoint::new("GET", "/_matrix/client/v3/pushrules/", Token),
        Endpoint::new("GET", "/_matrix/client/v3/pushrules/global/", Token),
        Endpoint::new("GET", "/_matrix/client/v3/pushrules/global/{rule_kind}/{rule_id}", Token)
            .bad_param("rule_kind", "sideways")
            .bad_param("rule_id", "org.example.nonexistent"),
        Endpoint::new("PUT", "/_matrix/client/v3/pushrules/global/{rule_kind}/{rule_id}", Token)
            .json(
                json!({ "actions": ["notify"], "conditions": [] }),
                &[("actions", Arr, true), ("conditions", Arr, false)],
            )
            .bad_param("rule_kind", "sideways")
            .bad_param("rule_id", ".m.rule.master")
            .bad_param("rule_id", "%2Em.rule.mine")
            .bad_param("rule_id", "a%5Cb")
            .bad_param("rule_id", "a%0Ab")
            .bad_pair("rule_kind", "content", r#"{"actions":["notify"]}"#.into())
            .bad_pair("rule_kind", "room", r#"{"actions":["notify"]}"#.into())
            .bad_pair("rule_kind", "sender", r#"{"actions":["notify"]}"#.into())
            .bad_body(r#"{"actions":["explode"]}"#)
            .bad_body(r#"{"actions":["notify"],"conditions":[{"key":"type"}]}"#)
            .bad_body(r#"{"actions":[{"set_tweak":1}]}"#)
            .bad_query("before=org.example.nonexistent")
            .bad_query("after=.m.rule.master")
            .bad_query("before=a&before=b"),
        Endpoint::new("DELETE", "/_matrix/client/v3/pushrules/global/{rule_kind}/{rule_id}", Token)
            .bad_param("rule_id", ".m.rule.master")
            .bad_param("rule_id", "org.example.nonexistent"),
        Endpoint::new(
            "GET",
            "/_matrix/client/v3/pushrules/global/{rule_kind}/{rule_id}/enabled",
            Token,
        )
        .bad_param("rule_id", "org.example.nonexistent"),
        Endpoint::new(
            "PUT",
            "/_matrix/client/v3/pushrules/global/{rule_kind}/{rule_id}/enabled",
            Token,
        )
        .json(json!({ "enabled": false }), &[("enabled", Bool, true)])
        .bad_param("rule_id", ".m.rule.nonexistent"),
        Endpoint::new(
            "GET",
            "/_matrix/client/v3/pushrules/global/{rule_kind}/{rule_id}/actions",
            Token,
        )
        .bad_param("rule_id", "org.example.nonexistent"),
        Endpoint::new(
            "PUT",
            "/_matrix/client/v3/pushrules/global/{rule_kind}/{rule_id}/actions",
            Token,
        )
        .json(json!({ "actions": [] }), &[("actions", Arr, true)])
        .bad_param("rule_id", ".m.rule.nonexistent")
        .bad_body(r#"{"actions":["explode"]}"#),
        Endpoint::new("GET", "/_matrix/client/v3/notifications", Token)
            .query(
                "",
                &[("from", Stream, false), ("limit", UInt, false), ("only", Enum, false)],
            )
            .bad_query("limit=0x"),
        Endpoint::new("GET", "/_matrix/client/v3/pushers", Token),
        Endpoint::new("POST", "/_matrix/client/v3/pushers/set", Token)
            .json(
                json!({
                    "pushkey": "corpus-key", "kind": "http", "app_id": "org.example.app",
                    "app_display_name": "App", "device_display_name": "Phone", "lang": "en",
                    "data": { "url": "https://push.example.org/_matrix/push/v1/notify" },
                }),
                &[
                    ("pushkey", Str, true),
                    ("kind", Str, false),
                    ("app_id", Str, true),
                    ("app_display_name", Str, true),
                    ("device_display_name", Str, true),
                    ("lang", Str, true),
                    ("profile_tag", Str, false),
                    ("data", Obj, true),
                    ("append", Bool, false),
                ],
            )
            .bad_body(r#"{"pushkey":"k","kind":"email","app_id":"a","app_display_name":"A","device_display_name":"D","lang":"en","data":{}}"#)
            .bad_body(r#"{"pushkey":"k","kind":"http","app_id":"a","app_display_name":"A","device_display_name":"D","lang":"en","data":{}}"#)
            .bad_body(r#"{"pushkey":"k","kind":"http","app_id":"a","app_display_name":"A","device_display_name":"D","lang":"en","data":{"url":"http://127.0.0.1/_matrix/push/v1/notify"}}"#)
            .bad_body(r#"{"pushkey":"k","kind":"http","app_id":"a","app_display_name":"A","device_display_name":"D","lang":"en","data":{"url":"https://push.example.org/elsewhere"}}"#)
            .bad_body(r#"{"pushkey":"k","kind":"http","app_id":"a","app_display_name":"A","device_display_name":"D","lang":"en","data":{"url":"https://push.example.org/_matrix/push/v1/notify","format":"full"}}"#)
            .bad_body(r#"{"pushkey":"","kind":"http","app_id":"a","app_display_name":"A","device_display_name":"D","lang":"en","data":{"url":"https://push.example.org/_matrix/push/v1/notify"}}"#),
        // Sync, presence, to-device, filters.
        Endpoint::new("GET", "/_matrix/client/v3/sync", Token)
            .query(
                "",
                &[
                    ("since", Stream, false),
                    ("filter", SyncFilter, false),
                    ("full_state", Bool, false),
                    ("set_presence", Enum, false),
                    ("timeout", UInt, false),
                ],
            )
            .bad_query("since=s99999999999"),
        Endpoint::new("GET", "/_matrix/client/v3/presence/{user}/status", Token),
        Endpoint::new("PUT", "/_matrix/client/v3/presence/{user}/status", Token)
            .json(
                json!({ "presence": "online", "status_msg": "here" }),
                &[("presence", Str, true), ("status_msg", Str, false)],
            )
            .bad_body(r#"{"presence":"bogus"}"#)
            .bad_body(r#"{"presence":""}"#)
            .bad_body(format!(r#"{{"presence":"online","status_msg":"{}"}}"#, "m".repeat(5000))),
        Endpoint::new("POST", "/_matrix/client/v3/keys/upload", Token)
            .json(
                json!({}),
                &[
                    ("device_keys", Obj, false),
                    ("one_time_keys", Obj, false),
                    ("fallback_keys", Obj, false),
                ],
            )
            .bad_body(r#"{"device_keys":{"user_id":"@someone:localhost"}}"#)
            .bad_body(r#"{"one_time_keys":{"nocolon":"k"}}"#)
            .bad_body(r#"{"one_time_keys":{"signed_curve25519:A":{"key":1}}}"#)
            .bad_body(r#"{"fallback_keys":{":A":"k"}}"#),
        Endpoint::new("POST", "/_matrix/client/v3/keys/query", Token)
            .json(
                json!({ "device_keys": { bob: [] } }),
                &[("device_keys", Obj, true), ("timeout", UInt, false)],
            )
            .bad_body(r#"{"device_keys":{"not-a-user":[]}}"#)
            .bad_body(format!(r#"{{"device_keys":{{"{bob}":"device"}}}}"#)),
        Endpoint::new("POST", "/_matrix/client/v3/keys/claim", Token)
            .json(
                json!({ "one_time_keys": { bob: { "DEVICE": "signed_curve25519" } } }),
                &[("one_time_keys", Obj, true), ("timeout", UInt, false)],
            )
            .bad_body(r#"{"one_time_keys":{"not-a-user":{}}}"#)
            .bad_body(format!(r#"{{"one_time_keys":{{"{bob}":{{"DEVICE":""}}}}}}"#))
            .bad_body(format!(r#"{{"one_time_keys":{{"{bob}":{{"DEVICE":1}}}}}}"#)),
        Endpoint::new("POST", "/_matrix/client/v3/keys/device_signing/upload", Token)
            .json(
                json!({}),
                &[
                    ("master_key", Obj, false),
                    ("self_signing_key", Obj, false),
                    ("user_signing_key", Obj, false),
                    ("auth", Obj, false),
                ],
            )
            .bad_body(r#"{"master_key":{"user_id":"@someone:localhost","usage":["master"],"keys":{}}}"#),
        Endpoint::new("POST", "/_matrix/client/v3/keys/signatures/upload", Token)
            .json(json!({}), &[])
            .bad_body("[]"),
        Endpoint::new("POST", "/_matrix/client/v3/room_keys/version", Token).json(
            json!({ "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {} }),
            &[("algorithm", Str, true), ("auth_data", Obj, true)],
        ),
        Endpoint::new("GET", "/_matrix/client/v3/room_keys/version", Token),
        Endpoint::new("GET", "/_matrix/client/v3/room_keys/version/{version}", Token),
        Endpoint::new("PUT", "/_matrix/client/v3/room_keys/version/{version}", Token).json(
            json!({ "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {} }),
            &[("algorithm", Str, true), ("auth_data", Obj, true), ("version", Str, false)],
        ),
        Endpoint::new("DELETE", "/_matrix/client/v3/room_keys/version/{version}", Token),
        Endpoint::new("PUT", "/_matrix/client/v3/room_keys/keys", Token)
            .query("version=1", &[("version", Str, true)])
            .json(json!({ "rooms": {} }), &[("rooms", Obj, true)])
            .bad_body(r#"{"rooms":{"not-a-room":{"sessions":{}}}}"#),
        Endpoint::new("GET", "/_matrix/client/v3/room_keys/keys", Token)
            .query("version=1", &[("version", Str, true)]),
        Endpoint::new("DELETE", "/_matrix/client/v3/room_keys/keys", Token)
            .query("version=1", &[("version", Str, true)]),
        Endpoint::new("PUT", "/_matrix/client/v3/room_keys/keys/{room}", Token)
            .query("version=1", &[("version", Str, true)])
            .json(json!({ "sessions": {} }), &[("sessions", Obj, true)]),
        Endpoint::new("GET", "/_matrix/client/v3/room_keys/keys/{room}", Token)
            .query("version=1", &[("version", Str, true)]),
        Endpoint::new("DELETE", "/_matrix/client/v3/room_keys/keys/{room}", Token)
            .query("version=1", &[("version", Str, true)]),
        Endpoint::new("PUT", "/_matrix/client/v3/room_keys/keys/{room}/{session}", Token)
            .query("version=1", &[("version", Str, true)])
            .json(json!({ "first_message_index": 0, "forwarded_count": 0, "is_verified": false, "session_data": {} }), &[
                    ("first_message_index", UInt, true),
                    ("forwarded_count", UInt, true),
                    ("is_verified", Bool, true),
                    ("session_data", Obj, true),
                ]),
        Endpoint::new("GET", "/_matrix/client/v3/room_keys/keys/{room}/{session}", Token)
            .query("version=1", &[("version", Str, true)]),
        Endpoint::new("DELETE", "/_matrix/client/v3/room_keys/keys/{room}/{session}", Token)
            .query("version=1", &[("version", Str, true)]),
        Endpoint::new("GET", "/_matrix/client/v3/keys/changes", Token).query(
            "from=s0&to=s0",
            &[("from", Stream, true), ("to", Stream, true)],
        ),
        Endpoint::new("PUT", "/_matrix/client/v3/sendToDevice/{kind}/{txn}", Token)
            .json(
                json!({ "messages": { bob: { "*": { "a": 1 } } } }),
                &[("messages", Obj, true)],
            )
            .bad_body(r#"{"messages":{"not-a-user":{"*":{}}}}"#)
            .bad_body(format!(r#"{{"messages":{{"{bob}":"device"}}}}"#))
            .bad_body(format!(r#"{{"messages":{{"{bob}":[]}}}}"#)),
        Endpoint::new("POST", "/_matrix/client/v3/user/{user}/filter", Token)
            .json(
                json!({ "room": { "timeline": { "limit": 10 } } }),
                &[
                    ("room", Obj, false),
                    ("presence", Obj, false),
                    ("account_data", Obj, false),
                    ("event_fields", Arr, false),
                    ("event_format", Str, false),
                ],
            )
            .bad_body(r#"{"room":{"timeline":{"limit":-1}}}"#)
            .bad_body(r#"{"room":{"timeline":{"limit":18446744073709551616}}}"#)
            .bad_body(r#"{"room":{"timeline":{"limit":1e400}}}"#)
            .bad_body(r#"{"room":{"timeline":{"limit":"10"}}}"#)
            .bad_body(r#"{"room":{"rooms":"!a:localhost"}}"#)
            .bad_body(r#"{"event_format":"bogus"}"#)
            .bad_body(r#"{"event_fields":[""]}"#),
        Endpoint::new("GET", "/_matrix/client/v3/user/{user}/filter/{filter}", Token),
        Endpoint::new("POST", "/_matrix/client/v3/user/{user}/openid/request_token", Token)
            .json(json!({}), &[]),
        // Search.
        Endpoint::new("POST", "/_matrix/client/v3/search", Token)
            .json(
                json!({ "search_categories": { "room_events": { "search_term": "hello" } } }),
                &[("search_categories", Obj, true)],
            )
            .bad_body(r#"{"search_categories":{"room_events":{}}}"#)
            .bad_body(r#"{"search_categories":{"room_events":[]}}"#)
            .bad_body(r#"{"search_categories":{"room_events":{"search_term":1}}}"#)
            .bad_body(r#"{"search_categories":{"room_events":{"search_term":"x","order_by":"oldest"}}}"#)
            .bad_body(r#"{"search_categories":{"room_events":{"search_term":"x","keys":["content.msgtype"]}}}"#)
            .bad_body(r#"{"search_categories":{"room_events":{"search_term":"x","keys":"content.body"}}}"#)
            .bad_body(r#"{"search_categories":{"room_events":{"search_term":"x","filter":[]}}}"#)
            .bad_body(r#"{"search_categories":{"room_events":{"search_term":"x","filter":{"limit":-1}}}}"#)
            .bad_body(r#"{"search_categories":{"room_events":{"search_term":"x","event_context":{"before_limit":-1}}}}"#)
            .bad_body(r#"{"search_categories":{"room_events":{"search_term":"x","groupings":{"group_by":[{"key":"type"}]}}}}"#)
            .bad_body(r#"{"search_categories":{"room_events":{"search_term":"x","groupings":{"group_by":"room_id"}}}}"#)
            .bad_body(r#"{"search_categories":{"room_events":{"search_term":"x","include_state":"yes"}}}"#)
            .bad_body(format!(
                r#"{{"search_categories":{{"room_events":{{"search_term":"{}"}}}}}}"#,
                "word ".repeat(300)
            ))
            .bad_query("next_batch=bogus")
            .bad_query("next_batch=")
            .bad_query("next_batch=%FF")
            .bad_query("next_batch=a&next_batch=b"),
        // Rooms.
        Endpoint::new("POST", "/_matrix/client/v3/createRoom", Token)
            .json(
                json!({ "name": "new room", "preset": "private_chat" }),
                &[
                    ("creation_content", Obj, false),
                    ("initial_state", Arr, false),
                    ("invite", Arr, false),
                    ("is_direct", Bool, false),
                    ("name", Str, false),
                    ("topic", Str, false),
                    ("power_level_content_override", Obj, false),
                    ("preset", Str, false),
                    ("room_alias_name", Str, false),
                    ("room_version", Str, false),
                    ("visibility", Str, false),
                ],
            )
            .bad_body(r#"{"preset":"bogus"}"#)
            .bad_body(r#"{"visibility":"bogus"}"#)
            .bad_body(r#"{"room_version":"bogus"}"#)
            .bad_body(r#"{"room_version":"1"}"#)
            .bad_body(r#"{"room_version":""}"#)
            .bad_body(r#"{"invite":["not-a-user"]}"#)
            .bad_body(r#"{"invite":["@nobody:localhost"]}"#)
            .bad_body(r#"{"invite":["@somebody:remote.example"]}"#)
            .bad_body(r#"{"invite":[1]}"#)
            .bad_body(r#"{"initial_state":[{"type":"m.room.create","content":{}}]}"#)
            .bad_body(r#"{"initial_state":[{"type":"m.room.power_levels","content":{}}]}"#)
            .bad_body(r#"{"initial_state":[{"type":"m.room.topic"}]}"#)
            .bad_body(r#"{"initial_state":[{"content":{}}]}"#)
            .bad_body(r#"{"initial_state":[["m.room.topic","",{"topic":"t"}]]}"#)
            .bad_body(r#"{"initial_state":[{"type":"m.room.topic","content":"topic"}]}"#)
            .bad_body(r#"{"initial_state":[{"type":"m.room.topic","state_key":1,"content":{}}]}"#)
            .bad_body(r#"{"room_alias_name":"bad alias"}"#)
            .bad_body(r#"{"room_alias_name":""}"#)
            .bad_body(r#"{"room_alias_name":"bad-input"}"#)
            .bad_body(format!(r#"{{"room_alias_name":"{}"}}"#, "a".repeat(300)))
            .bad_body(r#"{"power_level_content_override":{"users_default":"high"}}"#)
            .bad_body(r#"{"power_level_content_override":{"users":{"not-a-user":100}}}"#)
            .bad_body(r#"{"power_level_content_override":{"users_default":9007199254740992}}"#)
            .bad_body(r#"{"creation_content":{"m.federate":1.5}}"#)
            .bad_body(r#"{"creation_content":{"n":9007199254740992}}"#)
            .bad_body(format!(r#"{{"topic":"{}"}}"#, "t".repeat(70_000))),
        Endpoint::new("GET", "/_matrix/client/v3/joined_rooms", Token),
        // The room directory.
        Endpoint::new("PUT", "/_matrix/client/v3/directory/room/{alias}", Token)
            .json(json!({ "room_id": room }), &[("room_id", Str, true)])
            .bad_pair("alias", "%23fresh:localhost", r#"{"room_id":"!nonexistent:localhost"}"#.into())
            .bad_pair("alias", "%23fresh:localhost", r#"{"room_id":"not-a-room"}"#.into())
            .bad_param("alias", "%23bad-input:localhost"),
        Endpoint::new("GET", "/_matrix/client/v3/directory/room/{alias}", Public)
            .bad_param("alias", "%23nonexistent:localhost"),
        Endpoint::new("DELETE", "/_matrix/client/v3/directory/room/{alias}", Token)
            .bad_param("alias", "%23nonexistent:localhost"),
        Endpoint::new("GET", "/_matrix/client/v3/directory/list/room/{room}", Public),
        Endpoint::new("PUT", "/_matrix/client/v3/directory/list/room/{room}", Token)
            .json(json!({ "visibility": "public" }), &[("visibility", Str, false)])
            .bad_body(r#"{"visibility":"bogus"}"#)
            .bad_body(r#"{"visibility":""}"#),
        Endpoint::new("GET", "/_matrix/client/v3/publicRooms", Public)
            .query(
                "",
                &[("server", Server, false), ("limit", UInt, false), ("since", Offset, false)],
            ),
        Endpoint::new("POST", "/_matrix/client/v3/publicRooms", Token)
            .json(
                json!({ "limit": 10 }),
                &[
                    ("limit", UInt, false),
                    ("since", Str, false),
                    ("filter", Obj, false),
                    ("include_all_networks", Bool, false),
                    ("third_party_instance_id", Str, false),
                ],
            )
            .query("", &[("server", Server, false)])
            .bad_body(r#"{"since":"bogus"}"#)
            .bad_body(r#"{"since":"o-1"}"#)
            .bad_body(r#"{"filter":{"generic_search_term":1}}"#)
            .bad_body(r#"{"filter":{"room_types":"m.space"}}"#)
            .bad_body(r#"{"filter":{"room_types":[1]}}"#)
            .bad_body(r#"{"include_all_networks":true,"third_party_instance_id":"x"}"#),
        Endpoint::new("GET", "/_matrix/client/v3/rooms/{room}/aliases", Token),
        // Membership.
        Endpoint::new("POST", "/_matrix/client/v3/join/{room}", Token)
            .json(json!({}), &[("reason", Str, false)])
            .bad_param("room", "%23nonexistent:localhost"),
        Endpoint::new("POST", "/_matrix/client/v3/rooms/{room}/join", Token)
            .json(json!({}), &[("reason", Str, false)]),
        Endpoint::new("POST", "/_matrix/client/v3/knock/{room}", Token)
            .json(json!({}), &[("reason", Str, false)])
            .bad_param("room", "%23nonexistent:localhost"),
        Endpoint::new("POST", "/_matrix/client/v3/rooms/{room}/leave", Token)
            .json(json!({}), &[("reason", Str, false)]),
        Endpoint::new("POST", "/_matrix/client/v3/rooms/{room}/invite", Token)
            .json(
                json!({ "user_id": bob }),
                &[("user_id", Str, true), ("reason", Str, false)],
            )
            .bad_body(r#"{"user_id":"not-a-user"}"#)
            .bad_body(r#"{"user_id":"@nobody:localhost"}"#)
            .bad_body(r#"{"user_id":"@somebody:remote.example"}"#),
        Endpoint::new("POST", "/_matrix/client/v3/rooms/{room}/kick", Token)
            .json(
                json!({ "user_id": bob }),
                &[("user_id", Str, true), ("reason", Str, false)],
            )
            .bad_body(r#"{"user_id":"not-a-user"}"#)
            .bad_body(r#"{"user_id":"@nobody:localhost"}"#),
        Endpoint::new("POST", "/_matrix/client/v3/rooms/{room}/ban", Token)
            .json(
                json!({ "user_id": bob }),
                &[("user_id", Str, true), ("reason", Str, false)],
            )
            .bad_body(r#"{"user_id":"not-a-user"}"#),
        Endpoint::new("POST", "/_matrix/client/v3/rooms/{room}/unban", Token)
            .json(
                json!({ "user_id": bob }),
                &[("user_id", Str, true), ("reason", Str, false)],
            )
            .bad_body(r#"{"user_id":"not-a-user"}"#),
        Endpoint::new("POST", "/_matrix/client/v3/rooms/{room}/upgrade", Token)
            .json(
                json!({ "new_version": "12" }),
                &[("new_version", Str, true), ("additional_creators", Arr, false)],
            )
            .bad_body(r#"{"new_version":"bogus"}"#)
            .bad_body(r#"{"new_version":"1"}"#)
            .bad_body(r#"{"new_version":""}"#)
            .bad_body(r#"{"new_version":"12","additional_creators":["not-a-user"]}"#),
        // Events.
        Endpoint::new("PUT", "/_matrix/client/v3/rooms/{room}/send/{kind}/{txn}", Token)
            .json(message, &[])
            .bad_body(r#"{"n":9007199254740992}"#)
            .bad_body(r#"{"n":-9007199254740992}"#)
            .bad_body(r#"{"n":1.5}"#)
            .bad_body(r#"{"n":18446744073709551615}"#)
            .bad_body(huge_event.clone())
            .bad_param("kind", long_name.clone()),
        Endpoint::new(
            "PUT",
            "/_matrix/client/v3/rooms/{room}/state/{kind}/{state_key}",
            Token,
        )
        .json(json!({ "topic": "a topic" }), &[])
        .bad_body(r#"{"n":1.5}"#)
        .bad_body(huge_event.clone())
        .bad_param("kind", long_name.clone())
        .bad_param("kind", "m.room.create")
        .bad_pair("kind", "m.room.member", r#"{"membership":"join"}"#.into())
        .bad_pair("state_key", "@nobody:localhost", r#"{"membership":"join"}"#.into()),
        Endpoint::new(
            "GET",
            "/_matrix/client/v3/rooms/{room}/state/{kind}/{state_key}",
            Token,
        )
        .query("", &[("format", Enum, false)])
        .bad_param("kind", "org.example.nonexistent"),
        Endpoint::new("PUT", "/_matrix/client/v3/rooms/{room}/state/{kind}", Token)
            .json(json!({ "topic": "a topic" }), &[])
            .bad_body(r#"{"n":1.5}"#)
            .bad_body(huge_event.clone())
            .bad_param("kind", long_name.clone())
            .bad_param("kind", "m.room.create")
            .bad_pair("kind", "m.room.member", r#"{"membership":"join"}"#.into())
            .bad_pair("kind", "m.room.power_levels", r#"{"users_default":"high"}"#.into())
            .bad_pair("kind", "m.room.power_levels", r#"{"users":{"@alice:localhost":"100"}}"#.into()),
        Endpoint::new("GET", "/_matrix/client/v3/rooms/{room}/state/{kind}", Token)
            .query("", &[("format", Enum, false)])
            .bad_param("kind", "org.example.nonexistent"),
        Endpoint::new("PUT", "/_matrix/client/v3/rooms/{room}/state/{kind}/", Token)
            .json(json!({ "topic": "a topic" }), &[])
            .bad_body(r#"{"n":1.5}"#)
            .bad_param("kind", "m.room.create"),
        Endpoint::new("GET", "/_matrix/client/v3/rooms/{room}/state/{kind}/", Token)
            .query("", &[("format", Enum, false)])
            .bad_param("kind", "org.example.nonexistent"),
        Endpoint::new("GET", "/_matrix/client/v3/rooms/{room}/state", Token),
        Endpoint::new("GET", "/_matrix/client/v3/rooms/{room}/event/{event}", Token),
        Endpoint::new("GET", "/_matrix/client/v3/rooms/{room}/messages", Token).query(
            "dir=b",
            &[
                ("dir", Enum, true),
                ("from", Stream, false),
                ("to", Stream, false),
                ("limit", UInt, false),
                ("filter", Filter, false),
            ],
        ),
        Endpoint::new("GET", "/_matrix/client/v3/rooms/{room}/members", Token)
            .query("", &[("at", Stream, false)]),
        Endpoint::new("GET", "/_matrix/client/v3/rooms/{room}/context/{event}", Token)
            .query("", &[("limit", UInt, false), ("filter", Filter, false)]),
        Endpoint::new("POST", "/_matrix/client/v3/rooms/{room}/forget", Token).json(json!({}), &[]),
        Endpoint::new("GET", "/_matrix/client/v1/rooms/{room}/relations/{event}", Token)
            .query("", &[
                ("from", Stream, false),
                ("to", Stream, false),
                ("limit", UInt, false),
                ("dir", Enum, false),
                ("recurse", Bool, false),
            ]),
        Endpoint::new(
            "GET",
            "/_matrix/client/v1/rooms/{room}/relations/{event}/{rel_type}",
            Token,
        )
        .query("", &[
                ("from", Stream, false),
                ("to", Stream, false),
                ("limit", UInt, false),
                ("dir", Enum, false),
                ("recurse", Bool, false),
            ]),
        Endpoint::new(
            "GET",
            "/_matrix/client/v1/rooms/{room}/relations/{event}/{rel_type}/{event_type}",
            Token,
        )
        .query("", &[
                ("from", Stream, false),
                ("to", Stream, false),
                ("limit", UInt, false),
                ("dir", Enum, false),
                ("recurse", Bool, false),
            ]),
        Endpoint::new("GET", "/_matrix/client/v1/rooms/{room}/threads", Token).query(
            "",
            &[("include", Enum, false), ("limit", UInt, false), ("from", Stream, false)],
        ),
        Endpoint::new("GET", "/_matrix/client/v1/rooms/{room}/timestamp_to_event", Token).query(
            "ts=0&dir=f",
            &[("ts", UInt, true), ("dir", Enum, true)],
        ),
        Endpoint::new("GET", "/_matrix/client/v3/rooms/{room}/joined_members", Token),
        Endpoint::new("PUT", "/_matrix/client/v3/rooms/{room}/redact/{event}/{txn}", Token)
            .json(json!({ "reason": "spam" }), &[("reason", Str, false)]),
        Endpoint::new("PUT", "/_matrix/client/v3/rooms/{room}/typing/{user}", Token).json(
            json!({ "typing": true, "timeout": 1000 }),
            &[("typing", Bool, true), ("timeout", UInt, false)],
        ),
        Endpoint::new(
            "POST",
            "/_matrix/client/v3/rooms/{room}/receipt/{receipt_type}/{event}",
            Token,
        )
        .json(json!({}), &[])
        .bad_body(r#"{"thread_id":1}"#)
        .bad_body(r#"{"thread_id":""}"#)
        .bad_body(r#"{"thread_id":"not-an-event"}"#)
        .bad_body(r#"{"thread_id":"$nonexistent"}"#)
        .bad_param("receipt_type", "m.fully_read%00"),
        Endpoint::new("POST", "/_matrix/client/v3/rooms/{room}/read_markers", Token)
            .json(json!({ "m.fully_read": event }), &[])
            .bad_body(r#"{"m.fully_read":1}"#)
            .bad_body(r#"{"m.fully_read":"not-an-event"}"#)
            .bad_body(r#"{"m.fully_read":"$nonexistent"}"#)
            .bad_body(r#"{"m.read":["$a"]}"#)
            .bad_body(r#"{"m.read.private":{}}"#),
        // People and rooms: the user directory, spaces, room summaries and reports.
        Endpoint::new("POST", "/_matrix/client/v3/user_directory/search", Token)
            .json(
                json!({ "search_term": "bob", "limit": 10 }),
                &[("search_term", Str, true), ("limit", UInt, false)],
            )
            .bad_body(format!(r#"{{"search_term":"{}"}}"#, "b".repeat(300))),
        Endpoint::new("GET", "/_matrix/client/v1/rooms/{room}/hierarchy", Token)
            .query(
                "",
                &[
                    ("limit", UInt, false),
                    ("max_depth", UInt, false),
                    ("suggested_only", Bool, false),
                ],
            )
            .bad_query("limit=0")
            .bad_query("from=bogus")
            .bad_query("from=")
            .bad_query("from=%FF"),
        Endpoint::new("GET", "/_matrix/client/v1/room_summary/{room}", OptionalToken)
            .bad_param("room", "%23nonexistent:localhost")
            .bad_query("via=bad%20server")
            .bad_query("via=%FF"),
        Endpoint::new("GET", "/_matrix/client/v3/rooms/{room}/summary", OptionalToken)
            .bad_query("via=bad%20server"),
        Endpoint::new("POST", "/_matrix/client/v3/rooms/{room}/report/{event}", Token)
            .json(json!({ "reason": "spam" }), &[("reason", Str, false)])
            .bad_body(r#"{"score":1}"#)
            .bad_body(r#"{"score":-101}"#)
            .bad_body(r#"{"score":"-10"}"#)
            .bad_body(r#"{"score":-1.5}"#)
            .bad_body(r#"{"score":-9223372036854775809}"#)
            .bad_body(format!(r#"{{"reason":"{}"}}"#, "r".repeat(1001))),
        Endpoint::new("POST", "/_matrix/client/v3/rooms/{room}/report", Token)
            .json(json!({ "reason": "spam" }), &[("reason", Str, true)])
            .bad_body(format!(r#"{{"reason":"{}"}}"#, "r".repeat(1001))),
        Endpoint::new("POST", "/_matrix/client/v3/users/{user}/report", Token)
            .json(json!({ "reason": "spam" }), &[("reason", Str, true)])
            .bad_body(format!(r#"{{"reason":"{}"}}"#, "r".repeat(1001))),
        // Two-factor login.
        Endpoint::new("GET", "/_matrix/client/unstable/org.roost.mfa/totp", Token),
        Endpoint::new("POST", "/_matrix/client/unstable/org.roost.mfa/totp", Token),
        Endpoint::new("DELETE", "/_matrix/client/unstable/org.roost.mfa/totp", Token).json(
            json!({ "password": PASSWORD, "code": "000000" }),
            &[("password", Str, true), ("code", Str, true)],
        ),
        Endpoint::new("POST", "/_matrix/client/unstable/org.roost.mfa/totp/confirm", Token).json(
            json!({ "code": "000000" }),
            &[("code", Str, true)],
        ),
        // The content repository. The valid media ID names nothing, so that no request in the
        // corpus downloads, thumbnails or uploads anything.
        Endpoint::new("POST", "/_matrix/media/v3/upload", Token),
        Endpoint::new("PUT", "/_matrix/media/v3/upload/{server_name}/{media_id}", Token)
            .bad_param("media_id", w.media_done.clone())
            .bad_param("media_id", w.media_pending.clone())
            .bad_param("server_name", "remote.example")
            .bad_param("media_id", "a.b")
            .bad_param("media_id", "m".repeat(256)),
        Endpoint::new("POST", "/_matrix/media/v1/create", Token),
        Endpoint::new("GET", "/_matrix/client/v1/media/config", Token),
        Endpoint::new("GET", "/_matrix/media/v3/config", Token),
        Endpoint::new("GET", "/_matrix/client/v1/media/download/{server_name}/{media_id}", Token)
            .query("", &MEDIA_DOWNLOAD_PARAMS)
            .bad_param("server_name", "remote.example")
            .bad_param("media_id", "a.b"),
        Endpoint::new(
            "GET",
            "/_matrix/client/v1/media/download/{server_name}/{media_id}/{file_name}",
            Token,
        )
        .query("", &MEDIA_DOWNLOAD_PARAMS),
        Endpoint::new("GET", "/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}", Token)
            .query("width=32&height=32", &MEDIA_THUMBNAIL_PARAMS)
            .bad_query("width=0&height=32")
            .bad_query("width=32&height=0")
            .bad_query("width=4294967296&height=32")
            .bad_query("width=32&height=32&method=fit"),
        Endpoint::new("GET", "/_matrix/media/v3/download/{server_name}/{media_id}", Public)
            .query("", &MEDIA_DOWNLOAD_PARAMS)
            // Alice's upload was made with the legacy routes switched off.
            .bad_param("media_id", w.media_done.clone()),
        Endpoint::new(
            "GET",
            "/_matrix/media/v3/download/{server_name}/{media_id}/{file_name}",
            Public,
        )
        .query("", &MEDIA_DOWNLOAD_PARAMS)
        .bad_param("media_id", w.media_done.clone()),
        Endpoint::new("GET", "/_matrix/media/v3/thumbnail/{server_name}/{media_id}", Public)
            .query("width=32&height=32", &MEDIA_THUMBNAIL_PARAMS)
            .bad_param("media_id", w.media_done.clone())
            .bad_query("width=0&height=0"),
    ]
}

/// The query parameters of media downloads.
const MEDIA_DOWNLOAD_PARAMS: [(&str, Ty, bool); 3] = [
    ("timeout_ms", Ty::UInt, false),
    ("allow_redirect", Ty::Bool, false),
    ("allow_remote", Ty::Bool, false),
];

/// The query parameters of media thumbnails.
const MEDIA_THUMBNAIL_PARAMS: [(&str, Ty, bool); 6] = [
    ("width", Ty::UInt, true),
    ("height", Ty::UInt, true),
    ("method", Ty::Enum, false),
    ("animated", Ty::Bool, false),
    ("timeout_ms", Ty::UInt, false),
    ("allow_redirect", Ty::Bool, false),
];

fn request_token_example() -> Value {
    json!({ "client_secret": "secret", "email": "someone@example.org", "send_attempt": 1 })
}

const REQUEST_TOKEN_FIELDS: &[(&str, Ty, bool)] = &[
    ("client_secret", Ty::Str, true),
    ("email", Ty::Str, true),
    ("send_attempt", Ty::UInt, true),
];

/// A segment of 60,000 characters.
fn huge() -> String {
    "a".repeat(60_000)
}

/// Bad values of a path parameter, as sent (already percent-encoded where needed).
fn bad_segments(param: &str) -> Vec<String> {
    // Invalid UTF-8, invalid percent-encoding, NUL, dot segments, encoded slashes, emptiness.
    let mut common: Vec<String> = [
        "",
        "%FF",
        "%FF%FE",
        "%C0%AF",
        "%ED%A0%80",
        "%zz",
        "%",
        "%2",
        "..",
        ".",
        "a%2Fb",
        "%00",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    common.push(huge());
    let specific: Vec<String> = match param {
        "room" => vec![
            "room".into(),
            "!".into(),
            "!:".into(),
            "!room".into(),
            "!room:".into(),
            "!:localhost".into(),
            ":localhost".into(),
            "!room%00:localhost".into(),
            "!room:bad%20server".into(),
            format!("!{}:localhost", "r".repeat(300)),
            "!nonexistent:localhost".into(),
            "%23alias:localhost".into(),
            "@alice:localhost".into(),
            "$event".into(),
        ],
        "user" | "user_id" => vec![
            "alice".into(),
            "@".into(),
            "@:".into(),
            "@alice".into(),
            "@alice:".into(),
            ":localhost".into(),
            "@alice%00:localhost".into(),
            "@al%20ice:localhost".into(),
            "@alice:bad%20server".into(),
            format!("@{}:localhost", "u".repeat(300)),
            "@nobody:localhost".into(),
            "@alice:remote.example".into(),
            "!room:localhost".into(),
        ],
        "event" => vec![
            "event".into(),
            "$".into(),
            "$%00".into(),
            format!("${}", "e".repeat(300)),
            "$nonexistent".into(),
            "$nonexistent:localhost".into(),
            "!room:localhost".into(),
            "@alice:localhost".into(),
        ],
        "alias" => vec![
            "alias".into(),
            "%23".into(),
            "%23:".into(),
            "%23alias".into(),
            "%23alias:".into(),
            "%23alias%00:localhost".into(),
            format!("%23{}:localhost", "a".repeat(300)),
            "%23alias:remote.example".into(),
            "%23alias:bad%20server".into(),
            "!room:localhost".into(),
        ],
        "receipt_type" => vec!["m.bogus".into(), "m.read.bogus".into()],
        "device_id" => vec!["nonexistent".into()],
        "filter" => vec!["nonexistent".into(), "-1".into()],
        "field" => vec![format!("f{}", "f".repeat(300))],
        _ => Vec::new(),
    };
    // Parameters that are free-form strings: only what can never be valid.
    match param {
        "kind" | "txn" | "tag" | "state_key" | "field" | "rule_id" | "rel_type" | "event_type" => {
            let mut out: Vec<String> = ["%FF", "%FF%FE", "%C0%AF", "%ED%A0%80"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            out.extend(specific);
            out
        }
        _ => {
            common.extend(specific);
            common
        }
    }
}

/// Wrong JSON values (as raw JSON text) for a body field of this type.
fn wrong_json(ty: Ty, required: bool) -> Vec<&'static str> {
    let mut out = match ty {
        Ty::Str => vec![
            "1",
            "true",
            "[]",
            "{}",
            "1.5",
            "18446744073709551616",
            "-9223372036854775809",
            "[\"s\"]",
        ],
        Ty::Bool => vec!["\"true\"", "1", "0", "[]", "{}", "\"\""],
        Ty::UInt => vec![
            "-1",
            "1.5",
            "\"1\"",
            "18446744073709551616",
            "-9223372036854775809",
            "1e300",
            "true",
            "[]",
            "{}",
        ],
        Ty::Obj => vec!["\"s\"", "1", "[]", "true"],
        Ty::Arr => vec!["\"s\"", "{}", "1", "true", "[1]", "[[]]", "[{}]"],
        _ => Vec::new(),
    };
    if required {
        out.push("null");
    }
    out
}

/// Wrong values (as sent in a query string) for a query parameter of this type.
fn wrong_query(ty: Ty) -> Vec<String> {
    let deep = format!("{}1{}", "%5B".repeat(10_000), "%5D".repeat(10_000));
    let list: &[&str] = match ty {
        Ty::UInt => &[
            "abc",
            "-1",
            "1.5",
            "1e400",
            "1e3",
            "18446744073709551616",
            "-9223372036854775809",
            "",
            "%FF",
            "0x10",
            "%00",
            "%201",
        ],
        Ty::Bool => &["maybe", "1", "0", "TRUE", "", "%FF"],
        Ty::Enum => &["bogus", "", "%FF", "%00", "b%00"],
        Ty::Stream => &[
            "garbage",
            "s",
            "s-1",
            "s1.5",
            "s18446744073709551616",
            "%FF",
            "s%FF",
            "t1",
            "",
        ],
        Ty::Filter => &[
            "%7B",
            "%FF",
            "%5B%5D",
            "1",
            "null",
            "%7B%22limit%22%3A-1%7D",
            "%7B%22limit%22%3A1e400%7D",
            "%7B%22limit%22%3A18446744073709551616%7D",
            "%7B%22limit%22%3A1%2C%22limit%22%3A2%7D",
            "%7B%22types%22%3A%7B%7D%7D",
            "%7B%22not_senders%22%3A%22%40a%3Alocalhost%22%7D",
        ],
        Ty::SyncFilter => &[
            "nonexistent",
            "%7B",
            "%FF",
            "%7B%22room%22%3A%5B%5D%7D",
            "%7B%22room%22%3A1%7D",
            "%7B%22room%22%3A%7B%22timeline%22%3A%5B%5D%7D%7D",
            "%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A-1%7D%7D%7D",
            "%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A1e400%7D%7D%7D",
            "%7B%22event_format%22%3A%22bogus%22%7D",
            "%7B%22event_fields%22%3A%5B%22%22%5D%7D",
            "%7B%22presence%22%3A%7B%7D%2C%22presence%22%3A%7B%7D%7D",
        ],
        Ty::Offset => &["x", "o", "o-1", "o1.5", "%FF", "o18446744073709551616"],
        Ty::Server => &["%FF", "bad%20server", "", "remote.example", "%00"],
        _ => &[],
    };
    let mut out: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    if matches!(ty, Ty::Filter | Ty::SyncFilter) {
        out.push(deep);
    }
    out
}

/// What a response must be.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A 4xx with a Matrix error body (or a user-interactive-auth body on 401).
    Refused,
    /// That status, with a Matrix error body.
    Status(u16),
    /// That status and errcode.
    Code(u16, &'static str),
    /// Refused by the HTTP layer before routing (hyper) with this status and no Matrix body,
    /// or refused like any other request when the HTTP layer lets it through.
    HttpLayer(u16),
}

/// How the body goes on the wire.
enum Payload {
    None,
    Bytes(Vec<u8>),
    /// Chunked transfer encoding, so no `Content-Length` announces the size.
    Chunked(Vec<u8>),
    /// Only a `Content-Length` header with this value; no body is sent.
    Declared(usize),
}

/// One request of the corpus.
struct Case {
    label: String,
    method: String,
    target: Vec<u8>,
    headers: Vec<(&'static str, Vec<u8>)>,
    payload: Payload,
    expect: Expect,
}

/// A raw HTTP response.
struct RawResponse {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

/// Percent-encodes a path segment or a query value.
fn encode(raw: &str) -> String {
    let mut out = String::new();
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$@:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The valid value of a path parameter.
fn valid_param(w: &World, name: &str) -> String {
    match name {
        "room" => encode(&w.room),
        "user" | "user_id" => encode(&w.alice.id),
        "event" => encode(&w.event),
        "alias" => encode(&w.alias),
        "filter" => encode(&w.filter),
        "device_id" => encode(&w.alice_device),
        "receipt_type" => "m.read".into(),
        "field" => "displayname".into(),
        "kind" => "org.example.kind".into(),
        "txn" => "bad-input-txn".into(),
        "tag" => "u.work".into(),
        "state_key" => "org.example.key".into(),
        "server_name" => "localhost".into(),
        "media_id" => "NoSuchMediaInTheCorpus0000".into(),
        "file_name" => "file.txt".into(),
        "rule_kind" => "override".into(),
        "rule_id" => "org.example.rule".into(),
        "rel_type" => "m.annotation".into(),
        "version" => "1".into(),
        "session" => "session1".into(),
        "event_type" => "m.reaction".into(),
        other => panic!("no valid value for the path parameter {other}"),
    }
}

/// The parameter names of a path template.
fn template_params(template: &str) -> Vec<&str> {
    template
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

/// The path of a template with the given raw parameter values (the others valid).
fn fill(w: &World, template: &str, overrides: &[(&str, String)]) -> String {
    template
        .split('/')
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => overrides
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| valid_param(w, name)),
                None => segment.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

fn with_query(path: &str, query: &str) -> Vec<u8> {
    if query.is_empty() {
        path.as_bytes().to_vec()
    } else {
        format!("{path}?{query}").into_bytes()
    }
}

fn bearer(token: &str) -> (&'static str, Vec<u8>) {
    ("authorization", format!("Bearer {token}").into_bytes())
}

/// The example body with one field's value replaced by raw JSON text.
fn with_field(example: &Value, field: &str, raw: &str) -> String {
    const MARK: &str = "\u{1}field\u{1}";
    let mut body = example.clone();
    body[field] = json!(MARK);
    body.to_string().replace("\"\\u0001field\\u0001\"", raw)
}

/// The example body with its first key written twice.
fn with_duplicate_key(example: &Value) -> String {
    match example.as_object().and_then(|o| o.iter().next()) {
        Some((key, value)) => {
            let rest = example.to_string();
            let pair = format!("{}:{}", json!(key), value);
            format!("{{{pair},{}", &rest[1..])
        }
        None => r#"{"a":1,"a":1}"#.into(),
    }
}

/// Bodies that are not JSON, or not a JSON object, whatever the endpoint.
fn generic_bodies() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let not_json = Expect::Code(400, "M_NOT_JSON");
    let not_object = Expect::Code(400, "M_BAD_JSON");
    let deep_arrays = format!(r#"{{"a":{}1{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
    let deep_objects = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    let mut out: Vec<(&str, Vec<u8>, Expect)> = vec![
        ("open brace", b"{".to_vec(), not_json),
        ("missing value", br#"{"a":}"#.to_vec(), not_json),
        ("bare word", b"nul".to_vec(), not_json),
        ("trailing garbage", b"{} x".to_vec(), not_json),
        ("two objects", b"{}{}".to_vec(), not_json),
        ("single quotes", b"{'a': 1}".to_vec(), not_json),
        ("trailing comma", br#"{"a":1,}"#.to_vec(), not_json),
        ("NaN", br#"{"a":NaN}"#.to_vec(), not_json),
        ("Infinity", br#"{"a":Infinity}"#.to_vec(), not_json),
        ("1e400", br#"{"a":1e400}"#.to_vec(), not_json),
        ("-1e400", br#"{"a":-1e400}"#.to_vec(), not_json),
        ("leading zero", br#"{"a":01}"#.to_vec(), not_json),
        ("byte order mark", b"\xEF\xBB\xBF{}".to_vec(), not_json),
        ("invalid UTF-8", b"{\"a\":\"\xFF\"}".to_vec(), not_json),
        ("invalid UTF-8 key", b"{\"\xC0\xAF\":1}".to_vec(), not_json),
        ("lone surrogate", br#"{"a":"\ud800"}"#.to_vec(), not_json),
        ("bad escape", br#"{"a":"\x"}"#.to_vec(), not_json),
        (
            "raw control character",
            b"{\"a\":\"\x01\"}".to_vec(),
            not_json,
        ),
        ("NUL byte", b"{\x00}".to_vec(), not_json),
        ("deep arrays", deep_arrays.into_bytes(), not_json),
        ("deep objects", deep_objects.into_bytes(), not_json),
        ("array", b"[]".to_vec(), not_object),
        ("array of objects", b"[{}]".to_vec(), not_object),
        ("string", br#""s""#.to_vec(), not_object),
        ("number", b"1".to_vec(), not_object),
        ("huge number", b"18446744073709551616".to_vec(), not_object),
        ("null", b"null".to_vec(), not_object),
        ("true", b"true".to_vec(), not_object),
    ];
    out.push(("form data", b"a=b&c=d".to_vec(), not_json));
    out
}

/// A bad credential: label, `Authorization` header, `access_token` query parameter.
type BadAuth = (&'static str, Option<Vec<u8>>, Option<String>);

/// Bad `Authorization` headers and query tokens, for endpoints that read a token.
fn bad_auth(w: &World) -> Vec<BadAuth> {
    let mut tampered = w.alice.token.clone();
    let last = if tampered.ends_with('A') { 'B' } else { 'A' };
    tampered.pop();
    tampered.push(last);
    vec![
        ("no token", None, None),
        ("garbage token", Some(b"Bearer garbage".to_vec()), None),
        ("empty token", Some(b"Bearer ".to_vec()), None),
        ("scheme only", Some(b"Bearer".to_vec()), None),
        (
            "basic scheme",
            Some(b"Basic YWxpY2U6cGFzcw==".to_vec()),
            None,
        ),
        (
            "tampered token",
            Some(format!("Bearer {tampered}").into_bytes()),
            None,
        ),
        (
            "stale token",
            Some(format!("Bearer {}", w.stale_token).into_bytes()),
            None,
        ),
        ("non-ASCII token", Some(b"Bearer \xFF\xFE".to_vec()), None),
        (
            "huge token",
            Some(format!("Bearer {}", "t".repeat(60_000)).into_bytes()),
            None,
        ),
        (
            "garbage query token",
            None,
            Some("access_token=garbage".into()),
        ),
        (
            "invalid UTF-8 query token",
            None,
            Some("access_token=%FF%FE".into()),
        ),
        ("empty query token", None, Some("access_token=".into())),
    ]
}

/// The corpus of one endpoint.
fn cases(w: &World, ep: &Endpoint) -> Vec<Case> {
    let mut out = Vec::new();
    let name = format!("{} {}", ep.method, ep.path);
    let path = fill(w, ep.path, &[]);
    let auth = if ep.access == Access::Public {
        Vec::new()
    } else {
        vec![bearer(&w.alice.token)]
    };
    let example = ep.body.as_ref().map(|(example, _)| example.to_string());
    let example_payload = || match &example {
        Some(body) => Payload::Bytes(body.clone().into_bytes()),
        None => Payload::None,
    };
    let case = |label: String, target: Vec<u8>, headers, payload, expect| Case {
        label: format!("{name}: {label}"),
        method: ep.method.to_owned(),
        target,
        headers,
        payload,
        expect,
    };

    // Access tokens, on an otherwise valid request.
    if ep.access != Access::Public {
        for (label, header, query) in bad_auth(w) {
            if ep.access == Access::OptionalToken && header.is_none() && query.is_none() {
                continue;
            }
            let query = match query {
                Some(q) if ep.query.is_empty() => q,
                Some(q) => format!("{}&{q}", ep.query),
                None => ep.query.to_owned(),
            };
            let headers = header
                .map(|h| vec![("authorization", h)])
                .unwrap_or_default();
            out.push(case(
                label.into(),
                with_query(&path, &query),
                headers,
                example_payload(),
                Expect::Status(401),
            ));
        }
    }

    // Bodies.
    if let Some((example_value, fields)) = &ep.body {
        let target = with_query(&path, ep.query);
        for (label, body, expect) in generic_bodies() {
            out.push(case(
                format!("body: {label}"),
                target.clone(),
                auth.clone(),
                Payload::Bytes(body),
                expect,
            ));
        }
        let form = (
            "content-type",
            b"application/x-www-form-urlencoded".to_vec(),
        );
        let mut headers = auth.clone();
        headers.push(form);
        out.push(case(
            "body: form content type".into(),
            target.clone(),
            headers,
            Payload::Bytes(b"a=b".to_vec()),
            Expect::Code(400, "M_NOT_JSON"),
        ));
        let mut headers = auth.clone();
        headers.push(("content-type", b"text/plain".to_vec()));
        out.push(case(
            "body: text content type".into(),
            target.clone(),
            headers,
            Payload::Bytes(b"hello".to_vec()),
            Expect::Code(400, "M_NOT_JSON"),
        ));
        out.push(case(
            "body: duplicate key".into(),
            target.clone(),
            auth.clone(),
            Payload::Bytes(with_duplicate_key(example_value).into_bytes()),
            Expect::Code(400, "M_BAD_JSON"),
        ));
        let oversize = format!(r#"{{"a":"{}"}}"#, "x".repeat(BODY_LIMIT));
        out.push(case(
            "body: over the limit".into(),
            target.clone(),
            auth.clone(),
            Payload::Bytes(oversize.clone().into_bytes()),
            Expect::Code(413, "M_TOO_LARGE"),
        ));
        out.push(case(
            "body: over the limit, chunked".into(),
            target.clone(),
            auth.clone(),
            Payload::Chunked(oversize.into_bytes()),
            Expect::Code(413, "M_TOO_LARGE"),
        ));
        for declared in [BODY_LIMIT + 1, 1 << 40] {
            out.push(case(
                format!("body: declared {declared} bytes"),
                target.clone(),
                auth.clone(),
                Payload::Declared(declared),
                Expect::Code(413, "M_TOO_LARGE"),
            ));
        }
        let required = fields.iter().any(|(_, _, required)| *required);
        if required {
            out.push(case(
                "body: empty".into(),
                target.clone(),
                auth.clone(),
                Payload::None,
                Expect::Status(400),
            ));
            out.push(case(
                "body: empty object".into(),
                target.clone(),
                auth.clone(),
                Payload::Bytes(b"{}".to_vec()),
                Expect::Status(400),
            ));
        }
        for (field, ty, required) in fields {
            for raw in wrong_json(*ty, *required) {
                out.push(case(
                    format!("body: {field} = {raw}"),
                    target.clone(),
                    auth.clone(),
                    Payload::Bytes(with_field(example_value, field, raw).into_bytes()),
                    Expect::Status(400),
                ));
            }
        }
    }

    // Query parameters.
    for (param, ty, required) in &ep.params {
        let others: Vec<&str> = ep
            .query
            .split('&')
            .filter(|p| !p.is_empty() && p.split('=').next() != Some(param))
            .collect();
        // Another server's directory is unknown (404), not malformed.
        let expect = match ty {
            Ty::Server => Expect::Refused,
            _ => Expect::Status(400),
        };
        for value in wrong_query(*ty) {
            let mut query = others.clone();
            let pair = format!("{param}={value}");
            query.push(&pair);
            out.push(case(
                format!("query: {param}={}", truncate(&value)),
                with_query(&path, &query.join("&")),
                auth.clone(),
                example_payload(),
                expect,
            ));
        }
        if *required {
            out.push(case(
                format!("query: no {param}"),
                with_query(&path, &others.join("&")),
                auth.clone(),
                example_payload(),
                Expect::Status(400),
            ));
        }
    }
    for pair in ep.query.split('&').filter(|p| !p.is_empty()) {
        out.push(case(
            format!("query: {pair} twice"),
            with_query(&path, &format!("{}&{pair}", ep.query)),
            auth.clone(),
            example_payload(),
            Expect::Status(400),
        ));
    }

    // Path parameters.
    for param in template_params(ep.path) {
        for bad in bad_segments(param) {
            let target = fill(w, ep.path, &[(param, bad.clone())]);
            out.push(case(
                format!("path: {param} = {}", truncate(&bad)),
                with_query(&target, ep.query),
                auth.clone(),
                example_payload(),
                Expect::Refused,
            ));
        }
    }

    // Endpoint-specific requests.
    for extra in &ep.extra {
        let target = fill(w, ep.path, &extra.params);
        let query = extra.query.as_deref().unwrap_or(ep.query);
        let payload = match &extra.body {
            Some(body) => Payload::Bytes(body.clone().into_bytes()),
            None => example_payload(),
        };
        let label = format!(
            "extra: {:?} {} {}",
            extra.params,
            truncate(query),
            truncate(extra.body.as_deref().unwrap_or("")),
        );
        out.push(case(
            label,
            with_query(&target, query),
            auth.clone(),
            payload,
            Expect::Refused,
        ));
    }
    out
}

fn truncate(s: &str) -> String {
    if s.len() <= 80 {
        s.to_owned()
    } else {
        let end = (0..=80).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
        format!("{}… ({} bytes)", &s[..end], s.len())
    }
}

/// Requests the HTTP layer refuses before routing: bytes that cannot appear in a request target.
fn http_layer_cases(w: &World) -> Vec<Case> {
    let room = encode(&w.room);
    let targets: Vec<Vec<u8>> = vec![
        format!("{V3}/rooms/{room}/state").into_bytes(),
        format!("{V3}/profile/").into_bytes(),
    ]
    .into_iter()
    .flat_map(|base| {
        [&b"\xFF"[..], b"\x00", b"\x7F", b"a b", b"\xC3\xA9", b"\"<>"]
            .iter()
            .map(move |junk| {
                let mut t = base.clone();
                t.extend_from_slice(junk);
                t
            })
            .collect::<Vec<_>>()
    })
    .collect();
    targets
        .into_iter()
        .map(|target| Case {
            label: format!("raw target {}", String::from_utf8_lossy(&target)),
            method: "GET".into(),
            target,
            headers: vec![bearer(&w.alice.token)],
            payload: Payload::None,
            expect: Expect::HttpLayer(400),
        })
        .chain(std::iter::once(Case {
            // hyper reserves the largest length: refused as a bad header.
            label: "content-length u64::MAX".into(),
            method: "PUT".into(),
            target: format!("{V3}/rooms/{room}/send/m.room.message/max").into_bytes(),
            headers: vec![bearer(&w.alice.token)],
            payload: Payload::Declared(usize::MAX),
            expect: Expect::HttpLayer(431),
        }))
        .collect()
}

/// Sends one request over a fresh connection and reads the whole response.
async fn send(addr: SocketAddr, case: &Case) -> Result<RawResponse, String> {
    let mut head = Vec::new();
    head.extend_from_slice(case.method.as_bytes());
    head.push(b' ');
    head.extend_from_slice(&case.target);
    head.extend_from_slice(b" HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    for (name, value) in &case.headers {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    let has_type = case.headers.iter().any(|(n, _)| *n == "content-type");
    let mut body = Vec::new();
    match &case.payload {
        Payload::None => {}
        Payload::Bytes(bytes) => {
            if !has_type {
                head.extend_from_slice(b"content-type: application/json\r\n");
            }
            head.extend_from_slice(format!("content-length: {}\r\n", bytes.len()).as_bytes());
            body.extend_from_slice(bytes);
        }
        Payload::Chunked(bytes) => {
            head.extend_from_slice(b"content-type: application/json\r\n");
            head.extend_from_slice(b"transfer-encoding: chunked\r\n");
            for chunk in bytes.chunks(8192) {
                body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                body.extend_from_slice(chunk);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
        }
        Payload::Declared(n) => {
            head.extend_from_slice(b"content-type: application/json\r\n");
            head.extend_from_slice(format!("content-length: {n}\r\n").as_bytes());
        }
    }
    head.extend_from_slice(b"\r\n");
    head.extend_from_slice(&body);

    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // The server may answer (and close) before reading a body it refuses; the answer counts.
    let _ = stream.write_all(&head).await;
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw).await;
    if raw.is_empty() {
        return Err(format!("no response (connection dropped: {read:?})"));
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<RawResponse, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("incomplete response head")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let mut content_type = String::new();
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "content-type" {
            content_type = value.to_owned();
        } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let mut body = raw[end + 4..].to_vec();
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(RawResponse {
        status,
        content_type,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size = std::str::from_utf8(&raw[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .ok_or("bad chunk size")?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// Checks a response against the expectation; `Err` explains what is wrong.
fn check(case: &Case, resp: &RawResponse) -> Result<(), String> {
    const SENSIBLE: [u16; 7] = [400, 401, 403, 404, 405, 409, 413];
    let text = String::from_utf8_lossy(&resp.body);
    let status = resp.status;
    if let Expect::HttpLayer(want) = case.expect
        && status == want
        && resp.body.is_empty()
    {
        return Ok(());
    }
    if !SENSIBLE.contains(&status) {
        return Err(format!("status {status}: {}", truncate(&text)));
    }
    if !resp.content_type.starts_with("application/json") {
        return Err(format!(
            "{status} with content type {:?}: {}",
            resp.content_type,
            truncate(&text)
        ));
    }
    let body: Value = serde_json::from_slice(&resp.body)
        .map_err(|e| format!("{status} body is not JSON ({e}): {}", truncate(&text)))?;
    let errcode = body["errcode"].as_str();
    let uia = status == 401 && body["flows"].is_array();
    let matrix = errcode.is_some_and(|c| c.starts_with("M_")) && body["error"].is_string();
    if !(matrix || uia) {
        return Err(format!(
            "{status} without a Matrix error body: {}",
            truncate(&text)
        ));
    }
    match case.expect {
        Expect::Status(want) if want != status => Err(format!(
            "status {status}, expected {want}: {}",
            truncate(&text)
        )),
        Expect::Code(want, code) if (want, Some(code)) != (status, errcode) => Err(format!(
            "{status} {errcode:?}, expected {want} {code}: {}",
            truncate(&text)
        )),
        _ => Ok(()),
    }
}

/// Registers and logs in the users, creates the room, events, alias and filter.
async fn world(server: &TestServer) -> World {
    let alice = user(server, "alice").await;
    let bob = user(server, "bob").await;
    let (status, whoami) = server
        .get("/_matrix/client/v3/account/whoami", Some(&alice.token))
        .await;
    assert_eq!(status, 200, "{whoami}");
    let alice_device = whoami["device_id"].as_str().expect("device_id").to_owned();
    let room = create_room(
        server,
        &alice,
        json!({ "preset": "public_chat", "room_alias_name": "bad-input", "name": "Bad input" }),
    )
    .await;
    let (status, body) = crate::common::join(server, &bob, &room).await;
    assert_eq!(status, 200, "{body}");
    let mut event = String::new();
    for i in 0..3 {
        let (status, body) = send_text(server, &alice, &room, &format!("t{i}"), "hello").await;
        assert_eq!(status, 200, "{body}");
        event = body["event_id"].as_str().expect("event_id").to_owned();
    }
    let (status, body) = send_text(server, &bob, &room, "b0", "hi").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .post(
            &format!("{V3}/user/{}/filter", alice.id),
            Some(&alice.token),
            json!({ "room": { "timeline": { "limit": 5 } } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let filter = body["filter_id"].as_str().expect("filter_id").to_owned();
    let (status, body) = server
        .call(
            Method::PUT,
            &format!("{V3}/user/{}/rooms/{room}/tags/u.work", alice.id),
            Some(&alice.token),
            Some(json!({ "order": 0.5 })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // A second device that logs out: its token is stale.
    let (status, body) = server.login("alice", PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    let stale_token = token(&body);
    let (status, body) = server
        .post(&format!("{V3}/logout"), Some(&stale_token), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    // Media: content Alice uploaded, and a media ID Bob created but has not uploaded to.
    let resp = server
        .http
        .post(server.url("/_matrix/media/v3/upload"))
        .bearer_auth(&alice.token)
        .header("content-type", "text/plain")
        .body("some content")
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("upload answer");
    let media_id = |body: &Value| {
        body["content_uri"]
            .as_str()
            .and_then(|u| u.rsplit('/').next())
            .expect("content_uri")
            .to_owned()
    };
    let media_done = media_id(&body);
    let (status, body) = server
        .post("/_matrix/media/v1/create", Some(&bob.token), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let media_pending = media_id(&body);
    // The search index commits what the messages above added, and stores its progress, when a
    // search waits for them: now, rather than during the corpus.
    let (status, body) = server
        .post(
            &format!("{V3}/search"),
            Some(&alice.token),
            json!({ "search_categories": { "room_events": { "search_term": "hello" } } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    World {
        alice,
        alice_device,
        bob,
        room,
        event,
        alias: "#bad-input:localhost".into(),
        filter,
        stale_token,
        media_done,
        media_pending,
    }
}

/// The devices of a user: ID and display name.
async fn devices(server: &TestServer, u: &User) -> BTreeMap<String, Value> {
    let (status, body) = server.get(&format!("{V3}/devices"), Some(&u.token)).await;
    assert_eq!(status, 200, "{body}");
    body["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| {
            (
                d["device_id"].as_str().unwrap_or_default().to_owned(),
                d["display_name"].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_refuses_bad_input() {
    let server = TestServer::start_with(|c| c.max_request_body_bytes = BODY_LIMIT).await;
    let running = server.server.as_ref().expect("running");
    let addr = running.addrs()[0];
    let w = world(&server).await;
    let table = endpoints(&w);

    // The table covers the router exactly: every path template, and on each the methods listed.
    let mut seen = BTreeSet::new();
    for e in &table {
        assert!(
            seen.insert((e.method, e.path)),
            "listed twice: {} {}",
            e.method,
            e.path
        );
    }
    // The Chat API's routes answer in their own error shape; `chat_openapi` walks them. The
    // federation and key routes need server signatures; `federation_bad_input` walks them.
    let routes: BTreeSet<String> = roost::api::route_templates()
        .into_iter()
        .filter(|r| r.starts_with("/_matrix") || r.starts_with("/.well-known") || r == "/health")
        .filter(|r| !r.starts_with("/_matrix/federation/") && !r.starts_with("/_matrix/key/"))
        .collect();
    let listed: BTreeSet<String> = table.iter().map(|e| e.path.to_owned()).collect();
    let missing: Vec<_> = routes.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "routes without a corpus entry: {missing:?}"
    );
    let unknown: Vec<_> = listed.difference(&routes).collect();
    assert!(
        unknown.is_empty(),
        "corpus entries for no route: {unknown:?}"
    );
    let mut corpus: Vec<Case> = Vec::new();
    for template in &routes {
        for method in METHODS {
            if table
                .iter()
                .any(|e| e.path == template && e.method == method)
            {
                continue;
            }
            // Not in the table: the router must not serve it either.
            corpus.push(Case {
                label: format!("{method} {template}: method not listed"),
                method: method.into(),
                target: fill(&w, template, &[]).into_bytes(),
                headers: vec![bearer(&w.alice.token)],
                payload: Payload::None,
                expect: Expect::Code(405, "M_UNRECOGNIZED"),
            });
        }
    }
    for ep in &table {
        corpus.extend(cases(&w, ep));
    }
    corpus.extend(http_layer_cases(&w));

    let services = running.services();
    let store = &services.store;
    let devices_before = devices(&server, &w.alice).await;
    let before = store.digest().expect("digest");
    let started = Instant::now();
    let failures: Vec<String> = futures_util::stream::iter(corpus.iter())
        .map(|case| async move {
            let result = match tokio::time::timeout(REQUEST_TIMEOUT, send(addr, case)).await {
                Ok(Ok(resp)) => check(case, &resp),
                Ok(Err(e)) => Err(e),
                Err(_) => Err("no answer in time".into()),
            };
            result.err().map(|e| format!("{}: {e}", case.label))
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    let elapsed = started.elapsed();
    eprintln!("bad input: {} requests in {elapsed:?}", corpus.len());

    // Still serving, and nothing was written.
    let (status, _) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(status, 200, "the server stopped answering");
    let after = store.digest().expect("digest");
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|tree| before.get(*tree) != after.get(*tree))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let devices_after = devices(&server, &w.alice).await;
    assert!(
        failures.is_empty(),
        "{} of {} requests were not refused properly:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
    assert!(
        changed.is_empty(),
        "rejected requests changed the trees {changed:?}"
    );
    assert_eq!(
        devices_before, devices_after,
        "rejected requests changed the devices"
    );
}
