//! Media across servers: a user of one server downloads and thumbnails media uploaded on the
//! other through their own server's client API (fetched over federation, then cached, so that
//! the second download does not need the other server), and the federation media endpoints
//! themselves (`multipart/mixed` answers, signed requests only).

use std::io::Cursor;

use axum::http::{self, HeaderValue, header};
use image::ImageFormat;
use roost::service::federation::multipart;
use ruma::api::federation::authentication::{ServerSignaturesInput, XMatrix};
use serde_json::Value;

use crate::common::{TestServer, User, errcode, user};
use crate::federation_common::{FederatedPair, FederatedServer};
use crate::federation_forge::Origin;

/// A PNG of `width` × `height`.
fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 256) as u8])
    });
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut out, ImageFormat::Png)
        .expect("encode");
    out.into_inner()
}

/// Uploads `bytes` as `u`; returns the media ID.
async fn upload(server: &TestServer, u: &User, bytes: Vec<u8>, name: &str) -> String {
    let response = server
        .http
        .post(server.url(&format!("/_matrix/media/v3/upload?filename={name}")))
        .bearer_auth(&u.token)
        .header("content-type", "image/png")
        .body(bytes)
        .send()
        .await
        .expect("upload sent");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    let uri = body["content_uri"].as_str().expect("content_uri");
    uri.rsplit('/').next().expect("a media ID").to_owned()
}

/// A client `GET` returning the status, content type and bytes.
async fn get_bytes(server: &TestServer, u: &User, path: &str) -> (u16, String, Vec<u8>) {
    let response = server
        .http
        .get(server.url(path))
        .bearer_auth(&u.token)
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        status,
        content_type,
        response.bytes().await.expect("body").to_vec(),
    )
}

/// A `GET` to `receiver` signed as `origin` (or not signed), returning the raw answer.
async fn federation_get(
    receiver: &FederatedServer,
    origin: Option<&Origin<'_>>,
    path: &str,
) -> (u16, String, Vec<u8>) {
    let mut request = receiver.http.get(receiver.url(path));
    if let Some(origin) = origin {
        let unsigned = http::Request::builder()
            .method(http::Method::GET)
            .uri(path)
            .body(Vec::<u8>::new())
            .expect("request");
        let authorization = XMatrix::try_from_http_request(
            &unsigned,
            ServerSignaturesInput::new(
                origin.name().to_owned(),
                receiver.name.clone(),
                origin.key(),
            ),
        )
        .expect("signed");
        request = request.header(header::AUTHORIZATION, HeaderValue::from(&authorization));
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        status,
        content_type,
        response.bytes().await.expect("body").to_vec(),
    )
}

fn json_errcode(bytes: &[u8]) -> String {
    let body: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    errcode(&body).to_owned()
}

/// The media part of a federation media answer: (its content type, its bytes).
fn media_part(content_type: &str, body: &[u8]) -> (String, Vec<u8>) {
    let boundary = multipart::boundary_of(content_type).expect("multipart/mixed");
    let parts = multipart::parse(&boundary, body).expect("a multipart body");
    assert_eq!(parts.len(), 2, "metadata and media");
    assert_eq!(parts[0].header("content-type"), Some("application/json"));
    let metadata: Value = serde_json::from_slice(parts[0].body).expect("JSON metadata");
    assert!(metadata.is_object());
    (
        parts[1]
            .header("content-type")
            .unwrap_or_default()
            .to_owned(),
        parts[1].body.to_vec(),
    )
}

#[tokio::test]
async fn remote_media_is_fetched_cached_and_thumbnailed() {
    let mut pair = FederatedPair::start().await;
    let alice = user(&pair.a, "alice").await;
    let bob = user(&pair.b, "bob").await;
    let original = png(96, 64);
    let media = upload(&pair.a, &alice, original.clone(), "cat.png").await;
    let a = pair.a.name.clone();
    let authed = |kind: &str, id: &str| format!("/_matrix/client/v1/media/{kind}/{a}/{id}");

    // Bob's server fetches it from Alice's, several downloads at once sharing the fetch.
    let download = authed("download", &media);
    let (first, second) = tokio::join!(
        get_bytes(&pair.b, &bob, &download),
        get_bytes(&pair.b, &bob, &download)
    );
    for (status, content_type, bytes) in [first, second] {
        assert_eq!(status, 200);
        assert_eq!(content_type, "image/png");
        assert_eq!(bytes, original);
    }
    let thumbnail = format!(
        "{}?width=32&height=32&method=scale",
        authed("thumbnail", &media)
    );
    let (status, content_type, bytes) = get_bytes(&pair.b, &bob, &thumbnail).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert!(content_type.starts_with("image/"), "{content_type}");
    let thumb = image::load_from_memory(&bytes).expect("an image");
    assert!(thumb.width() <= 96 && thumb.height() <= 64 && thumb.width() < 96);

    // A media ID Alice's server does not have; one Bob's server may not fetch.
    let (status, _, body) = get_bytes(&pair.b, &bob, &authed("download", "missingmedia")).await;
    assert_eq!((status, json_errcode(&body).as_str()), (404, "M_NOT_FOUND"));
    let other = upload(&pair.a, &alice, png(8, 8), "dog.png").await;
    let local_only = format!("{}?allow_remote=false", authed("download", &other));
    let (status, _, body) = get_bytes(&pair.b, &bob, &local_only).await;
    assert_eq!((status, json_errcode(&body).as_str()), (404, "M_NOT_FOUND"));

    // The federation endpoints of Alice's server, as Bob's server calls them.
    let b = Origin::new(&pair.b);
    let path = format!("/_matrix/federation/v1/media/download/{media}");
    let (status, content_type, body) = federation_get(&pair.a, Some(&b), &path).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        content_type.starts_with("multipart/mixed"),
        "{content_type}"
    );
    assert_eq!(
        media_part(&content_type, &body),
        ("image/png".to_owned(), original.clone())
    );
    let path =
        format!("/_matrix/federation/v1/media/thumbnail/{media}?width=16&height=16&method=crop");
    let (status, content_type, body) = federation_get(&pair.a, Some(&b), &path).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (part_type, thumb) = media_part(&content_type, &body);
    assert!(part_type.starts_with("image/"), "{part_type}");
    image::load_from_memory(&thumb).expect("a thumbnail");
    for (path, signed, expected) in [
        (
            "/_matrix/federation/v1/media/download/missingmedia".to_owned(),
            true,
            (404, "M_NOT_FOUND"),
        ),
        (
            "/_matrix/federation/v1/media/download/bad.id".to_owned(),
            true,
            (400, "M_INVALID_PARAM"),
        ),
        (
            format!("/_matrix/federation/v1/media/thumbnail/{media}?width=0&height=5"),
            true,
            (400, "M_INVALID_PARAM"),
        ),
        (
            format!("/_matrix/federation/v1/media/thumbnail/{media}"),
            true,
            (400, "M_MISSING_PARAM"),
        ),
        (
            format!("/_matrix/federation/v1/media/download/{media}"),
            false,
            (401, "M_UNAUTHORIZED"),
        ),
    ] {
        let origin = signed.then_some(&b);
        let (status, _, body) = federation_get(&pair.a, origin, &path).await;
        assert_eq!((status, json_errcode(&body).as_str()), expected, "{path}");
    }
    // Media Bob's server only cached is not its to serve.
    let path = format!("/_matrix/federation/v1/media/download/{media}");
    let a_origin = Origin::new(&pair.a);
    let (status, _, body) = federation_get(&pair.b, Some(&a_origin), &path).await;
    assert_eq!((status, json_errcode(&body).as_str()), (404, "M_NOT_FOUND"));

    // With Alice's server gone, what Bob's server cached is still served; the rest is not.
    pair.a.stop().await;
    let (status, _, bytes) = get_bytes(&pair.b, &bob, &download).await;
    assert_eq!((status, bytes), (200, original));
    let thumbnail = format!(
        "{}?width=48&height=48&method=crop",
        authed("thumbnail", &media)
    );
    let (status, _, _) = get_bytes(&pair.b, &bob, &thumbnail).await;
    assert_eq!(status, 200);
    let (status, _, body) = get_bytes(&pair.b, &bob, &authed("download", &other)).await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
}
