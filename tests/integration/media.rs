//! The content repository: uploads (direct and asynchronous), downloads with ranges and safety
//! headers, waiting for pending uploads, quotas, thumbnails, the legacy routes, de-duplication
//! and admin deletion; and a round trip through matrix-sdk.

use std::io::Cursor;
use std::path::Path;
use std::time::{Duration, Instant};

use image::{AnimationDecoder, ImageFormat};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestServer, User, errcode, user};

const AUTHED: &str = "/_matrix/client/v1/media";
const LEGACY: &str = "/_matrix/media/v3";

/// A colourful RGB image of `width` × `height`, encoded as `format`.
fn image_bytes(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut out, format)
        .expect("encode");
    out.into_inner()
}

fn png(width: u32, height: u32) -> Vec<u8> {
    image_bytes(width, height, ImageFormat::Png)
}

/// An animated GIF of `frames` frames of `width` × `height`.
fn animated_gif(width: u32, height: u32, frames: u32) -> Vec<u8> {
    use image::codecs::gif::{GifEncoder, Repeat};
    let mut out = Cursor::new(Vec::new());
    {
        let mut encoder = GifEncoder::new(&mut out);
        encoder.set_repeat(Repeat::Infinite).expect("repeat");
        for i in 0..frames {
            let buffer = image::RgbaImage::from_fn(width, height, |x, _| {
                if (x + i * 10) % 40 < 20 {
                    image::Rgba([255, 0, 0, 255])
                } else {
                    image::Rgba([0, 0, 255, 255])
                }
            });
            let frame =
                image::Frame::from_parts(buffer, 0, 0, image::Delay::from_numer_denom_ms(100, 1));
            encoder.encode_frame(frame).expect("frame");
        }
    }
    out.into_inner()
}

/// A GIF with a logical screen of `width` × `height` and `frames` frames of one pixel each: a
/// tiny file that decoders expand to the whole screen for every frame.
fn sparse_gif(width: u16, height: u16, frames: u32) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend(width.to_le_bytes());
    out.extend(height.to_le_bytes());
    // A global colour table of two colours: black and white.
    out.extend([0x80, 0, 0, 0, 0, 0, 255, 255, 255]);
    out.extend([0x21, 0xff, 0x0b]);
    out.extend(b"NETSCAPE2.0");
    out.extend([3, 1, 0, 0, 0]);
    for i in 0..frames {
        // A delay of 10 ms, then a 1×1 image somewhere on the top row, of colour 0.
        out.extend([0x21, 0xf9, 4, 0, 1, 0, 0, 0]);
        let x = (i % u32::from(width)) as u16;
        out.push(0x2c);
        out.extend(x.to_le_bytes());
        out.extend([0, 0, 1, 0, 1, 0, 0]);
        out.extend([2, 2, 0x44, 0x01, 0]);
    }
    out.push(0x3b);
    out
}

/// `POST /upload`: (status, body).
async fn upload(
    server: &TestServer,
    token: &str,
    content_type: &str,
    filename: Option<&str>,
    bytes: Vec<u8>,
) -> (u16, Value) {
    let mut url = server.url(&format!("{LEGACY}/upload"));
    if let Some(name) = filename {
        url = format!("{url}?filename={}", urlencode(name));
    }
    let resp = server
        .http
        .post(url)
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .expect("upload sent");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Uploads and returns the `mxc://` URI's "server/mediaId" part.
async fn upload_ok(server: &TestServer, u: &User, content_type: &str, bytes: Vec<u8>) -> String {
    let (status, body) = upload(server, &u.token, content_type, None, bytes).await;
    assert_eq!(status, 200, "{body}");
    mxc_path(&body)
}

fn mxc_path(body: &Value) -> String {
    body["content_uri"]
        .as_str()
        .and_then(|u| u.strip_prefix("mxc://"))
        .expect("content_uri")
        .to_owned()
}

/// A GET with an optional token and extra headers.
async fn get(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = server.http.get(server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request sent")
}

async fn error_of(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, errcode(&body).to_owned())
}

async fn put_content(server: &TestServer, token: &str, mxc: &str, bytes: Vec<u8>) -> (u16, Value) {
    let resp = server
        .http
        .put(server.url(&format!("{LEGACY}/upload/{mxc}")))
        .bearer_auth(token)
        .header("content-type", "text/plain")
        .body(bytes)
        .send()
        .await
        .expect("put sent");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn create(server: &TestServer, u: &User) -> (u16, Value) {
    server
        .post("/_matrix/media/v1/create", Some(&u.token), json!({}))
        .await
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn decode(bytes: &[u8]) -> image::DynamicImage {
    image::load_from_memory(bytes).expect("a decodable image")
}

#[tokio::test]
async fn sdk_users_share_an_image_and_a_file() {
    use matrix_sdk::config::SyncSettings;
    use matrix_sdk::media::{MediaFormat, MediaRequestParameters, MediaThumbnailSettings};
    use matrix_sdk::ruma::api::client::media::get_content_thumbnail::v3::Method as ThumbMethod;
    use matrix_sdk::ruma::api::client::{membership::join_room_by_id, message, room::create_room};
    use matrix_sdk::ruma::events::AnySyncTimelineEvent;
    use matrix_sdk::ruma::events::room::MediaSource;
    use matrix_sdk::ruma::events::room::message::{
        FileMessageEventContent, ImageMessageEventContent, MessageType, RoomMessageEventContent,
    };
    use matrix_sdk::ruma::{OwnedTransactionId, UserId, uint};

    let server = TestServer::start().await;
    let alice = crate::sdk::sdk_user(&server, "alice").await;
    let bob = crate::sdk::sdk_user(&server, "bob").await;

    let mut request = create_room::v3::Request::new();
    request.invite = vec![UserId::parse("@bob:localhost").unwrap()];
    let room_id = alice.send(request).await.unwrap().room_id;
    bob.send(join_room_by_id::v3::Request::new(room_id.clone()))
        .await
        .unwrap();

    let picture = png(640, 480);
    let document = b"minutes of the meeting\n".repeat(1000);
    let image_uri = alice
        .media()
        .upload(&mime::IMAGE_PNG, picture.clone(), None)
        .await
        .unwrap()
        .content_uri;
    let file_uri = alice
        .media()
        .upload(&mime::TEXT_PLAIN, document.clone(), None)
        .await
        .unwrap()
        .content_uri;
    assert!(image_uri.media_id().unwrap().len() >= 24);
    let contents = [
        MessageType::Image(ImageMessageEventContent::plain(
            "cat.png".into(),
            image_uri.clone(),
        )),
        MessageType::File(FileMessageEventContent::plain(
            "minutes.txt".into(),
            file_uri.clone(),
        )),
    ];
    for (i, content) in contents.into_iter().enumerate() {
        let request = message::send_message_event::v3::Request::new(
            room_id.clone(),
            OwnedTransactionId::from(format!("media{i}")),
            &RoomMessageEventContent::new(content),
        )
        .unwrap();
        alice.send(request).await.unwrap();
    }

    // Bob finds both in his sync and fetches them.
    let response = bob.sync_once(SyncSettings::default()).await.unwrap();
    let timeline = &response.rooms.joined[&room_id].timeline.events;
    let mut sources = Vec::new();
    for event in timeline {
        if let Ok(AnySyncTimelineEvent::MessageLike(
            matrix_sdk::ruma::events::AnySyncMessageLikeEvent::RoomMessage(message),
        )) = event.raw().deserialize()
            && let Some(original) = message.as_original()
        {
            match &original.content.msgtype {
                MessageType::Image(image) => sources.push(("image", image.source.clone())),
                MessageType::File(file) => sources.push(("file", file.source.clone())),
                _ => {}
            }
        }
    }
    assert_eq!(sources.len(), 2, "both media messages are in Bob's sync");
    for (kind, source) in sources {
        let MediaSource::Plain(uri) = &source else {
            panic!("unencrypted media");
        };
        let request = MediaRequestParameters {
            source: source.clone(),
            format: MediaFormat::File,
        };
        let bytes = bob
            .media()
            .get_media_content(&request, false)
            .await
            .unwrap();
        match kind {
            "image" => {
                assert_eq!(uri, &image_uri);
                assert_eq!(bytes, picture);
                let request = MediaRequestParameters {
                    source,
                    format: MediaFormat::Thumbnail(MediaThumbnailSettings::with_method(
                        ThumbMethod::Scale,
                        uint!(320),
                        uint!(240),
                    )),
                };
                let thumb = bob
                    .media()
                    .get_media_content(&request, false)
                    .await
                    .unwrap();
                let thumb = decode(&thumb);
                assert!(thumb.width() <= 320 && thumb.height() <= 240);
                assert_eq!((thumb.width(), thumb.height()), (320, 240));
            }
            _ => {
                assert_eq!(uri, &file_uri);
                assert_eq!(bytes, document);
            }
        }
    }
}

#[tokio::test]
async fn upload_size_limit_and_quota() {
    let server = TestServer::start_with(|c| {
        c.media.max_upload_bytes = 1000;
        c.media.max_bytes_per_user = 2500;
    })
    .await;
    let alice = user(&server, "alice").await;

    let (status, body) = server
        .get(&format!("{AUTHED}/config"), Some(&alice.token))
        .await;
    assert_eq!((status, body["m.upload.size"].as_u64()), (200, Some(1000)));

    // Declared too large.
    let (status, body) = upload(&server, &alice.token, "text/plain", None, vec![b'x'; 1001]).await;
    assert_eq!((status, errcode(&body)), (413, "M_TOO_LARGE"), "{body}");
    // Too large while streaming (chunked, no length declared).
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![b'y'; 100])).collect();
    let resp = server
        .http
        .post(server.url(&format!("{LEGACY}/upload")))
        .bearer_auth(&alice.token)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(resp).await, (413, "M_TOO_LARGE".into()));
    // Nothing was left behind by the refused uploads.
    assert!(files_under(&server.data.path().join("media/content")).is_empty());
    assert!(files_under(&server.data.path().join("media/tmp")).is_empty());

    // The quota: two uploads of 1000 fit in 2500, a third does not.
    for i in 0..2u8 {
        upload_ok(&server, &alice, "text/plain", vec![i; 1000]).await;
    }
    let (status, body) = upload(&server, &alice.token, "text/plain", None, vec![9; 1000]).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    assert!(body["error"].as_str().unwrap().contains("quota"), "{body}");
    // Smaller still fits.
    upload_ok(&server, &alice, "text/plain", vec![7; 500]).await;
    let usage = server
        .server
        .as_ref()
        .unwrap()
        .services()
        .media
        .usage(&ruma::UserId::parse(&alice.id).unwrap())
        .unwrap();
    assert_eq!(usage, 2500);
}

#[tokio::test]
async fn downloads_need_a_token_and_existing_media() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let mxc = upload_ok(&server, &alice, "text/plain", b"hello".to_vec()).await;

    let resp = get(&server, &format!("{AUTHED}/download/{mxc}"), None, &[]).await;
    assert_eq!(error_of(resp).await, (401, "M_MISSING_TOKEN".into()));
    let resp = get(&server, &format!("{AUTHED}/config"), None, &[]).await;
    assert_eq!(error_of(resp).await, (401, "M_MISSING_TOKEN".into()));
    for path in [
        format!("{AUTHED}/download/localhost/NoSuchMediaIdAtAll000000"),
        format!("{AUTHED}/download/remote.example/NoSuchMediaIdAtAll000000"),
        format!("{AUTHED}/thumbnail/localhost/NoSuchMediaIdAtAll?width=32&height=32"),
    ] {
        let resp = get(&server, &path, Some(&alice.token), &[]).await;
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
        assert_eq!(error_of(resp).await, (404, "M_NOT_FOUND".into()), "{path}");
    }
    let resp = get(
        &server,
        &format!("{AUTHED}/download/localhost/bad.id"),
        Some(&alice.token),
        &[],
    )
    .await;
    assert_eq!(error_of(resp).await, (400, "M_INVALID_PARAM".into()));

    let resp = get(
        &server,
        &format!("{AUTHED}/download/{mxc}"),
        Some(&alice.token),
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type"), "text/plain");
    assert_eq!(header(&resp, "content-disposition"), "inline");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"hello");
}

#[tokio::test]
async fn unsafe_types_are_attachments_with_sandbox_headers() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#;
    let (status, body) = upload(
        &server,
        &alice.token,
        "image/svg+xml",
        Some("../evil \"pic\".svg"),
        svg.to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mxc = mxc_path(&body);
    let resp = get(
        &server,
        &format!("{AUTHED}/download/{mxc}"),
        Some(&alice.token),
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type"), "image/svg+xml");
    assert_eq!(
        header(&resp, "content-disposition"),
        "attachment; filename=\"evil pic.svg\""
    );
    assert_eq!(
        header(&resp, "content-security-policy"),
        "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
         style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"
    );
    assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
    assert_eq!(
        header(&resp, "cross-origin-resource-policy"),
        "cross-origin"
    );

    // HTML is an attachment too, whatever name the path gives it; a PNG is inline.
    let mxc = upload_ok(&server, &alice, "text/html", b"<script>1</script>".to_vec()).await;
    let resp = get(
        &server,
        &format!("{AUTHED}/download/{mxc}/r%C3%A9sum%C3%A9.html"),
        Some(&alice.token),
        &[],
    )
    .await;
    assert_eq!(
        header(&resp, "content-disposition"),
        "attachment; filename=\"r_sum_.html\"; filename*=utf-8''r%C3%A9sum%C3%A9.html"
    );
    let mxc = upload_ok(&server, &alice, "image/png", png(4, 4)).await;
    let resp = get(
        &server,
        &format!("{AUTHED}/download/{mxc}/a.png"),
        Some(&alice.token),
        &[],
    )
    .await;
    assert_eq!(
        header(&resp, "content-disposition"),
        "inline; filename=\"a.png\""
    );
    // No content type: application/octet-stream, an attachment.
    let resp = server
        .http
        .post(server.url(&format!("{LEGACY}/upload")))
        .bearer_auth(&alice.token)
        .body(b"??".to_vec())
        .send()
        .await
        .unwrap();
    let mxc = mxc_path(&resp.json().await.unwrap());
    let resp = get(
        &server,
        &format!("{AUTHED}/download/{mxc}"),
        Some(&alice.token),
        &[],
    )
    .await;
    assert_eq!(header(&resp, "content-type"), "application/octet-stream");
    assert_eq!(header(&resp, "content-disposition"), "attachment");
}

#[tokio::test]
async fn byte_ranges() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let mxc = upload_ok(&server, &alice, "application/octet-stream", data.clone()).await;
    let path = format!("{AUTHED}/download/{mxc}");

    let resp = get(&server, &path, Some(&alice.token), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "accept-ranges"), "bytes");
    assert_eq!(header(&resp, "content-length"), "1000");

    for (range, start, end) in [
        ("bytes=0-99", 0, 99),
        ("bytes=900-", 900, 999),
        ("bytes=-10", 990, 999),
        ("bytes=995-2000", 995, 999),
    ] {
        let resp = get(&server, &path, Some(&alice.token), &[("range", range)]).await;
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header(&resp, "content-range"),
            format!("bytes {start}-{end}/1000"),
            "{range}"
        );
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
        let body = resp.bytes().await.unwrap();
        assert_eq!(body.as_ref(), &data[start..=end], "{range}");
    }
    for range in ["bytes=1000-", "bytes=5000-6000", "bytes=-0"] {
        let resp = get(&server, &path, Some(&alice.token), &[("range", range)]).await;
        assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(header(&resp, "content-range"), "bytes */1000");
    }
    // Several ranges are not supported: the whole file.
    let resp = get(
        &server,
        &path,
        Some(&alice.token),
        &[("range", "bytes=0-1,5-6")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().len(), 1000);
}

#[tokio::test]
async fn asynchronous_uploads() {
    let server = TestServer::start_with(|c| c.media.max_pending_uploads = 3).await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;

    let (status, body) = create(&server, &alice).await;
    assert_eq!(status, 200, "{body}");
    let mxc = mxc_path(&body);
    let expires = body["unused_expires_at"]
        .as_u64()
        .expect("unused_expires_at");
    assert!(expires > roost::util::now_ms() + 3600 * 1000);

    let (status, body) = put_content(&server, &bob.token, &mxc, b"bob's".to_vec()).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    let (status, body) = put_content(&server, &alice.token, &mxc, b"alice's".to_vec()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = put_content(&server, &alice.token, &mxc, b"again".to_vec()).await;
    assert_eq!(
        (status, errcode(&body)),
        (409, "M_CANNOT_OVERWRITE_MEDIA"),
        "{body}"
    );
    let resp = get(
        &server,
        &format!("{AUTHED}/download/{mxc}"),
        Some(&bob.token),
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"alice's");

    // Unknown IDs: 404.
    let (status, body) = put_content(
        &server,
        &alice.token,
        "localhost/NeverCreated0000000000",
        b"x".to_vec(),
    )
    .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");

    // At most three pending per user.
    for _ in 0..3 {
        let (status, body) = create(&server, &alice).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = create(&server, &alice).await;
    assert_eq!(
        (status, errcode(&body)),
        (429, "M_LIMIT_EXCEEDED"),
        "{body}"
    );
    let (status, _) = create(&server, &bob).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn downloads_wait_for_pending_uploads() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let (_, body) = create(&server, &alice).await;
    let mxc = mxc_path(&body);

    // A download waiting (up to 10 s) completes as soon as the upload arrives.
    let http = server.http.clone();
    let url = server.url(&format!("{AUTHED}/download/{mxc}?timeout_ms=10000"));
    let token = alice.token.clone();
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let resp = http.get(url).bearer_auth(token).send().await.unwrap();
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap();
        (started.elapsed(), status, bytes)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the download waits for the upload");
    let (status, body) = put_content(&server, &alice.token, &mxc, b"worth the wait".to_vec()).await;
    assert_eq!(status, 200, "{body}");
    let (elapsed, status, bytes) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes.as_ref(), b"worth the wait");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

    // With a short timeout and no upload: 504 M_NOT_YET_UPLOADED.
    let (_, body) = create(&server, &alice).await;
    let mxc = mxc_path(&body);
    let started = Instant::now();
    let resp = get(
        &server,
        &format!("{AUTHED}/download/{mxc}?timeout_ms=200"),
        Some(&alice.token),
        &[],
    )
    .await;
    assert_eq!(error_of(resp).await, (504, "M_NOT_YET_UPLOADED".into()));
    assert!(started.elapsed() >= Duration::from_millis(200));
    let resp = get(
        &server,
        &format!("{AUTHED}/thumbnail/{mxc}?width=32&height=32&timeout_ms=100"),
        Some(&alice.token),
        &[],
    )
    .await;
    assert_eq!(error_of(resp).await, (504, "M_NOT_YET_UPLOADED".into()));
}

#[tokio::test]
async fn legacy_routes_serve_only_what_the_switch_allowed() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let mxc = upload_ok(&server, &alice, "image/png", png(64, 48)).await;
    for path in [
        format!("{LEGACY}/download/{mxc}"),
        format!("{LEGACY}/download/{mxc}/a.png"),
        format!("{LEGACY}/thumbnail/{mxc}?width=32&height=32"),
    ] {
        let resp = get(&server, &path, None, &[]).await;
        assert_eq!(error_of(resp).await, (404, "M_NOT_FOUND".into()), "{path}");
    }
    let resp = get(
        &server,
        &format!("{AUTHED}/download/{mxc}"),
        Some(&alice.token),
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);

    let server = TestServer::start_with(|c| c.media.legacy_unauthenticated_downloads = true).await;
    let alice = user(&server, "alice").await;
    let picture = png(64, 48);
    let mxc = upload_ok(&server, &alice, "image/png", picture.clone()).await;
    let resp = get(
        &server,
        &format!("{LEGACY}/download/{mxc}?allow_redirect=true"),
        None,
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&resp, "cross-origin-resource-policy"),
        "cross-origin"
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &picture[..]);
    let resp = get(
        &server,
        &format!("{LEGACY}/thumbnail/{mxc}?width=32&height=32&method=crop"),
        None,
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let thumb = decode(&resp.bytes().await.unwrap());
    assert_eq!((thumb.width(), thumb.height()), (32, 32));
}

async fn thumbnail(
    server: &TestServer,
    u: &User,
    mxc: &str,
    query: &str,
) -> (String, image::DynamicImage, Vec<u8>) {
    let resp = get(
        server,
        &format!("{AUTHED}/thumbnail/{mxc}?{query}"),
        Some(&u.token),
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK, "{query}");
    assert!(header(&resp, "content-disposition").starts_with("inline"));
    assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
    let content_type = header(&resp, "content-type").to_owned();
    let bytes = resp.bytes().await.unwrap().to_vec();
    (content_type, decode(&bytes), bytes)
}

#[tokio::test]
async fn thumbnails_crop_scale_and_animate() {
    let server = TestServer::start_with(|c| c.media.thumbnail_max_source_pixels = 1_000_000).await;
    let alice = user(&server, "alice").await;
    let picture = png(640, 480);
    let mxc = upload_ok(&server, &alice, "image/png", picture.clone()).await;

    // crop: exactly the box, snapped down to the fixed sizes (32, 96, 240, 320, …, 1600; up to
    // 32 exact).
    for (w, h, want) in [
        (32, 32, (32, 32)),
        (96, 96, (96, 96)),
        (100, 300, (96, 240)),
        (20, 7, (20, 7)),
    ] {
        let (ct, thumb, _) = thumbnail(
            &server,
            &alice,
            &mxc,
            &format!("width={w}&height={h}&method=crop"),
        )
        .await;
        assert_eq!(ct, "image/png");
        assert_eq!((thumb.width(), thumb.height()), want, "{w}x{h}");
        assert!(thumb.width() <= w && thumb.height() <= h);
    }
    // A crop box wider than the image (800×100 snapped to 800×96): as wide as the image, with
    // the box's aspect ratio.
    let (_, thumb, _) = thumbnail(&server, &alice, &mxc, "width=800&height=100&method=crop").await;
    assert_eq!((thumb.width(), thumb.height()), (640, 76));
    // scale: inside the box, aspect ratio kept, never larger than asked.
    for (w, h, want) in [
        (320, 240, (320, 240)),
        (100, 100, (96, 72)),
        (1000, 240, (320, 240)),
        (96, 500, (96, 72)),
    ] {
        let (_, thumb, _) = thumbnail(
            &server,
            &alice,
            &mxc,
            &format!("width={w}&height={h}&method=scale"),
        )
        .await;
        assert_eq!((thumb.width(), thumb.height()), want, "{w}x{h}");
        assert!(thumb.width() <= w && thumb.height() <= h);
    }
    // Larger than the image: the original itself.
    let (ct, _, bytes) = thumbnail(&server, &alice, &mxc, "width=2000&height=2000").await;
    assert_eq!((ct.as_str(), bytes == picture), ("image/png", true));
    // Cached: the same request again gives the same bytes, from one file.
    let (_, _, first) = thumbnail(&server, &alice, &mxc, "width=50&height=50&method=crop").await;
    let (_, _, again) = thumbnail(&server, &alice, &mxc, "width=50&height=50&method=crop").await;
    assert_eq!(first, again);
    // Requests that snap to the same box share one cached file.
    let thumbs_dir = server.data.path().join("media/thumbnails");
    let before = files_under(&thumbs_dir).len();
    for size in [600, 601, 630, 639] {
        let (_, thumb, _) = thumbnail(
            &server,
            &alice,
            &mxc,
            &format!("width={size}&height={size}&method=crop"),
        )
        .await;
        assert_eq!((thumb.width(), thumb.height()), (480, 480));
    }
    assert_eq!(files_under(&thumbs_dir).len(), before + 1);

    // JPEG sources get JPEG thumbnails.
    let mxc_jpeg = upload_ok(
        &server,
        &alice,
        "image/jpeg",
        image_bytes(400, 200, ImageFormat::Jpeg),
    )
    .await;
    let (ct, thumb, _) = thumbnail(
        &server,
        &alice,
        &mxc_jpeg,
        "width=100&height=100&method=scale",
    )
    .await;
    assert_eq!(
        (ct.as_str(), thumb.width(), thumb.height()),
        ("image/jpeg", 96, 48)
    );
    // WebP sources too (served as PNG).
    let mxc_webp = upload_ok(
        &server,
        &alice,
        "image/webp",
        image_bytes(300, 300, ImageFormat::WebP),
    )
    .await;
    let (ct, thumb, _) =
        thumbnail(&server, &alice, &mxc_webp, "width=30&height=30&method=crop").await;
    assert_eq!(
        (ct.as_str(), thumb.width(), thumb.height()),
        ("image/png", 30, 30)
    );

    // An animated GIF stays animated when asked, and is still otherwise.
    let gif = animated_gif(200, 100, 4);
    let mxc_gif = upload_ok(&server, &alice, "image/gif", gif).await;
    let (ct, _, bytes) = thumbnail(
        &server,
        &alice,
        &mxc_gif,
        "width=50&height=50&method=scale&animated=true",
    )
    .await;
    assert_eq!(ct, "image/gif");
    let frames = image::codecs::gif::GifDecoder::new(Cursor::new(&bytes))
        .unwrap()
        .into_frames()
        .collect_frames()
        .unwrap();
    assert_eq!(frames.len(), 4);
    // 50×50 snaps to 32×32.
    assert_eq!(frames[0].buffer().dimensions(), (32, 16));
    let (ct, thumb, _) =
        thumbnail(&server, &alice, &mxc_gif, "width=50&height=50&method=scale").await;
    assert_eq!(
        (ct.as_str(), thumb.width(), thumb.height()),
        ("image/png", 32, 16)
    );
    // Even when the box is larger, a still thumbnail is asked for: not the animated original.
    let (ct, thumb, _) = thumbnail(
        &server,
        &alice,
        &mxc_gif,
        "width=500&height=500&animated=false",
    )
    .await;
    assert_eq!(
        (ct.as_str(), thumb.width(), thumb.height()),
        ("image/png", 200, 100)
    );

    // Not an image: 400 M_UNKNOWN. Too many pixels: 413 M_TOO_LARGE. A broken image: 400.
    let mxc_text = upload_ok(&server, &alice, "text/plain", b"not an image".to_vec()).await;
    let too_big = upload_ok(&server, &alice, "image/png", png(1200, 1000)).await;
    let mut bomb = png(16, 16);
    // The header claims 60000×60000 pixels.
    bomb[16..20].copy_from_slice(&60000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&60000u32.to_be_bytes());
    let bomb = upload_ok(&server, &alice, "image/png", bomb).await;
    let broken = upload_ok(
        &server,
        &alice,
        "image/png",
        b"\x89PNG\r\n\x1a\nbroken".to_vec(),
    )
    .await;
    for (mxc, want) in [
        (&mxc_text, (400, "M_UNKNOWN")),
        (&too_big, (413, "M_TOO_LARGE")),
        (&broken, (400, "M_UNKNOWN")),
    ] {
        let resp = get(
            &server,
            &format!("{AUTHED}/thumbnail/{mxc}?width=32&height=32"),
            Some(&alice.token),
            &[],
        )
        .await;
        assert_eq!(error_of(resp).await, (want.0, want.1.to_owned()), "{mxc}");
    }
    let resp = get(
        &server,
        &format!("{AUTHED}/thumbnail/{bomb}?width=32&height=32"),
        Some(&alice.token),
        &[],
    )
    .await;
    let (status, code) = error_of(resp).await;
    assert!(
        matches!(
            (status, code.as_str()),
            (400, "M_UNKNOWN") | (413, "M_TOO_LARGE")
        ),
        "{status} {code}"
    );
    // Bad sizes.
    for query in [
        "width=0&height=10",
        "width=10",
        "width=10&height=10&method=fit",
        "width=-1&height=1",
    ] {
        let resp = get(
            &server,
            &format!("{AUTHED}/thumbnail/{mxc}?{query}"),
            Some(&alice.token),
            &[],
        )
        .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{query}");
    }
}

#[tokio::test]
async fn animated_thumbnails_have_a_pixel_budget() {
    let server = TestServer::start_with(|c| c.media.thumbnail_max_source_pixels = 8_000_000).await;
    let alice = user(&server, "alice").await;
    // 300 frames on a 2048×2048 screen, asked for at 5999×5999 (snapped to 1600×1600): 300
    // frames of 1600×1600 are far beyond the budget, so a still thumbnail, never larger than
    // the snapped box.
    let mxc = upload_ok(&server, &alice, "image/gif", sparse_gif(2048, 2048, 300)).await;
    let (ct, thumb, _) = thumbnail(
        &server,
        &alice,
        &mxc,
        "width=5999&height=5999&method=scale&animated=true",
    )
    .await;
    assert_eq!(
        (ct.as_str(), thumb.width(), thumb.height()),
        ("image/png", 1600, 1600)
    );
    // Cached as such: the same answer again.
    let (ct, _, _) = thumbnail(
        &server,
        &alice,
        &mxc,
        "width=1700&height=1650&method=scale&animated=true",
    )
    .await;
    assert_eq!(ct, "image/png");
    // Within the budget, the same source animates: every frame, within the box.
    let mxc = upload_ok(&server, &alice, "image/gif", sparse_gif(2048, 2048, 20)).await;
    let (ct, _, bytes) = thumbnail(
        &server,
        &alice,
        &mxc,
        "width=300&height=300&method=crop&animated=true",
    )
    .await;
    assert_eq!(ct, "image/gif");
    let frames = image::codecs::gif::GifDecoder::new(Cursor::new(&bytes))
        .unwrap()
        .into_frames()
        .collect_frames()
        .unwrap();
    assert_eq!(frames.len(), 20);
    assert_eq!(frames[0].buffer().dimensions(), (240, 240));
}

#[tokio::test]
async fn identical_uploads_are_stored_once_and_deleted_with_the_last_reference() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let carol = user(&server, "carol").await;
    let services = server.server.as_ref().unwrap().services();
    let content_dir = server.data.path().join("media/content");
    let thumbs_dir = server.data.path().join("media/thumbnails");

    let picture = png(320, 200);
    let first = upload_ok(&server, &alice, "image/png", picture.clone()).await;
    let second = upload_ok(&server, &carol, "image/png", picture.clone()).await;
    assert_ne!(first, second);
    let files = files_under(&content_dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::read(&files[0]).unwrap(), picture);
    let sha = roost::util::sha256_hex(&picture);
    assert!(files[0].ends_with(format!("{}/{}/{sha}", &sha[..2], &sha[2..4])));
    assert_eq!(services.media.references(&sha).unwrap(), 2);
    let (_, thumb, _) = thumbnail(&server, &alice, &first, "width=32&height=32&method=crop").await;
    assert_eq!(thumb.width(), 32);
    assert_eq!(files_under(&thumbs_dir).len(), 1);

    // Deleting one item (as `roost media delete` does) keeps the file for the other.
    let (server_name, media_id) = first.split_once('/').unwrap();
    let mxc_uri = format!("mxc://{first}");
    assert_eq!(
        roost::service::media::parse_mxc(&mxc_uri),
        Some((server_name, media_id))
    );
    assert!(services.media.delete(server_name, media_id).await.unwrap());
    assert!(!services.media.delete(server_name, media_id).await.unwrap());
    for path in [
        format!("{AUTHED}/download/{first}"),
        format!("{AUTHED}/download/{first}/x.png"),
        format!("{AUTHED}/thumbnail/{first}?width=32&height=32&method=crop"),
    ] {
        let resp = get(&server, &path, Some(&alice.token), &[]).await;
        assert_eq!(error_of(resp).await, (404, "M_NOT_FOUND".into()), "{path}");
    }
    let resp = get(
        &server,
        &format!("{AUTHED}/download/{second}"),
        Some(&alice.token),
        &[],
    )
    .await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &picture[..]);
    assert_eq!(files_under(&content_dir).len(), 1);
    assert_eq!(services.media.references(&sha).unwrap(), 1);
    assert_eq!(
        services
            .media
            .usage(&ruma::UserId::parse(&alice.id).unwrap())
            .unwrap(),
        0
    );

    // Deleting all of Carol's media (`roost media delete-user`) removes the file and thumbnails.
    let other = upload_ok(&server, &carol, "text/plain", b"notes".to_vec()).await;
    let (_, pending) = create(&server, &carol).await;
    let pending = mxc_path(&pending);
    let carol_id = ruma::UserId::parse(&carol.id).unwrap();
    assert_eq!(services.media.delete_user(&carol_id).await.unwrap(), 3);
    for mxc in [&second, &other] {
        let resp = get(
            &server,
            &format!("{AUTHED}/download/{mxc}"),
            Some(&alice.token),
            &[],
        )
        .await;
        assert_eq!(error_of(resp).await, (404, "M_NOT_FOUND".into()), "{mxc}");
    }
    let (status, _) = put_content(&server, &carol.token, &pending, b"late".to_vec()).await;
    assert_eq!(status, 404);
    assert!(files_under(&content_dir).is_empty());
    assert!(files_under(&thumbs_dir).is_empty());
    assert_eq!(services.media.usage(&carol_id).unwrap(), 0);
    assert_eq!(services.media.references(&sha).unwrap(), 0);
}

#[tokio::test]
async fn the_admin_cli_deletes_media() {
    let data = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_with(|c| c.data_dir = data.path().to_path_buf()).await;
    let alice = user(&server, "alice").await;
    let mxc = upload_ok(&server, &alice, "text/plain", b"to be deleted".to_vec()).await;
    let kept = upload_ok(&server, &alice, "text/plain", b"kept for now".to_vec()).await;
    server.stop().await;

    let run = |args: &[&str]| {
        let output = crate::child::roost(data.path())
            .args(args)
            .output()
            .expect("roost runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&["media", "delete", &format!("mxc://{mxc}")]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = run(&["media", "delete", &format!("mxc://{mxc}")]);
    assert!(!ok && err.contains("no such media"), "{err}");
    let (ok, _, err) = run(&["media", "delete", "not-an-mxc"]);
    assert!(!ok && err.contains("not an mxc"), "{err}");
    let (ok, out, err) = run(&["media", "delete-user", "@alice:localhost"]);
    assert!(ok && out.contains("deleted 1 media"), "{out}{err}");
    let _ = kept;
    assert!(files_under(&data.path().join("media/content")).is_empty());
}
