//! The Chat API's own documentation: `GET /openapi.json` (the OpenAPI document, written in YAML in
//! `spec/openapi.yaml` and served as JSON) and `GET /docs` (Swagger UI over it).
//!
//! Everything the page loads is embedded in the binary and served under `/docs/assets/`, so the
//! page works offline and can carry a Content-Security-Policy that allows scripts, styles and
//! requests from this server only. The Swagger UI files are vendored unmodified in
//! `assets/swagger-ui/` (see the README there); the page and its start-up script are ours, in
//! `assets/docs/`, because an inline script would need `'unsafe-inline'`.

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::error::{ChatError, ChatResult};
use super::extract::ChatPath;
use crate::api::Routes;

/// The document as written; the tests read the same file.
const OPENAPI_YAML: &str = include_str!("../../../spec/openapi.yaml");

/// The policy of the docs page: this server only, no inline script or style, no framing.
/// `img-src data:` is for the icons Swagger UI's style sheet embeds; `connect-src 'self'` lets it
/// fetch `/openapi.json` and send "Try it out" requests.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// A file served under `/docs/assets/`.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

const ASSETS: &[Asset] = &[
    Asset {
        name: "swagger-ui-bundle.js",
        content_type: JS,
        bytes: include_bytes!("../../../assets/swagger-ui/swagger-ui-bundle.js"),
    },
    Asset {
        name: "swagger-ui.css",
        content_type: CSS,
        bytes: include_bytes!("../../../assets/swagger-ui/swagger-ui.css"),
    },
    Asset {
        name: "docs-init.js",
        content_type: JS,
        bytes: include_bytes!("../../../assets/docs/docs-init.js"),
    },
    Asset {
        name: "docs.css",
        content_type: CSS,
        bytes: include_bytes!("../../../assets/docs/docs.css"),
    },
    Asset {
        name: "LICENSE",
        content_type: TEXT,
        bytes: include_bytes!("../../../assets/swagger-ui/LICENSE"),
    },
    Asset {
        name: "NOTICE",
        content_type: TEXT,
        bytes: include_bytes!("../../../assets/swagger-ui/NOTICE"),
    },
    Asset {
        name: "swagger-ui-bundle.js.LICENSE.txt",
        content_type: TEXT,
        bytes: include_bytes!("../../../assets/swagger-ui/swagger-ui-bundle.js.LICENSE.txt"),
    },
];

const PAGE: &[u8] = include_bytes!("../../../assets/docs/index.html");

pub(super) fn routes(routes: Routes) -> Routes {
    routes
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(page))
        .route("/docs/assets/{id}", get(asset))
}

/// The document converted to JSON, once. The conversion cannot fail for the document this
/// binary was built with (a unit test parses it), but a failure is reported as a 500 rather than
/// a panic. The YAML value is written out directly, so the JSON keeps the document's order
/// (a `serde_json::Value` would sort the keys, and the docs page would list the operations
/// alphabetically instead of in the order the document tells them).
fn openapi() -> Result<&'static Served, &'static str> {
    static DOC: OnceLock<Result<Served, String>> = OnceLock::new();
    DOC.get_or_init(|| {
        let value: serde_norway::Value =
            serde_norway::from_str(OPENAPI_YAML).map_err(|e| format!("openapi.yaml: {e}"))?;
        let json = serde_json::to_vec(&value).map_err(|e| format!("openapi.json: {e}"))?;
        Ok(Served::new(Bytes::from(json)))
    })
    .as_ref()
    .map_err(String::as_str)
}

/// A body with its entity tag, so that browsers revalidate with `If-None-Match` and get a 304
/// instead of the whole file again.
struct Served {
    bytes: Bytes,
    etag: HeaderValue,
}

impl Served {
    fn new(bytes: Bytes) -> Self {
        let digest = Sha256::digest(&bytes);
        let etag = format!("\"{}\"", hex::encode(&digest[..16]));
        Self {
            bytes,
            etag: HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\"")),
        }
    }
}

async fn openapi_json(headers: HeaderMap) -> ChatResult<Response> {
    let doc = openapi().map_err(|e| {
        tracing::error!(error = e, "the OpenAPI document does not parse");
        ChatError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the API document is unavailable",
        )
    })?;
    Ok(respond(
        &headers,
        &doc.etag,
        "application/json",
        "no-cache",
        doc.bytes.clone(),
    ))
}

async fn page(headers: HeaderMap) -> Response {
    static SERVED: OnceLock<Served> = OnceLock::new();
    let served = SERVED.get_or_init(|| Served::new(Bytes::from_static(PAGE)));
    let mut response = respond(
        &headers,
        &served.etag,
        "text/html; charset=utf-8",
        "no-cache",
        served.bytes.clone(),
    );
    let page_headers = response.headers_mut();
    page_headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    page_headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    page_headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn asset(ChatPath(name): ChatPath<String>, headers: HeaderMap) -> ChatResult<Response> {
    // The entity tags of all assets, hashed on first use (the bundle is large).
    static ETAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    let etags = ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| Served::new(Bytes::from_static(a.bytes)).etag)
            .collect()
    });
    let (asset, etag) = ASSETS
        .iter()
        .zip(etags)
        .find(|(a, _)| a.name == name)
        .ok_or_else(|| ChatError::not_found("no such documentation asset"))?;
    // An hour, then a revalidation that costs a 304: the names carry no version, so an upgraded
    // server must be able to replace them.
    Ok(respond(
        &headers,
        etag,
        asset.content_type,
        "public, max-age=3600",
        Bytes::from_static(asset.bytes),
    ))
}

/// 200 with the body, or 304 when the client already holds this version.
fn respond(
    request: &HeaderMap,
    etag: &HeaderValue,
    content_type: &'static str,
    cache_control: &'static str,
    body: Bytes,
) -> Response {
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/").as_bytes() == etag.as_bytes()
        });
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control),
        ),
        (header::ETAG, etag.clone()),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    if fresh {
        (StatusCode::NOT_MODIFIED, headers).into_response()
    } else {
        (StatusCode::OK, headers, body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_parses_as_openapi_3_1() {
        let doc = openapi().expect("spec/openapi.yaml parses");
        let value: serde_json::Value = serde_json::from_slice(&doc.bytes).expect("JSON");
        assert_eq!(value["openapi"], "3.1.0");
        assert!(value["paths"]["/openapi.json"].is_object());
        // The paths keep the document's order: the story starts with sign-up.
        let text = std::str::from_utf8(&doc.bytes).expect("UTF-8");
        let first_path = text.split("\"paths\":{\"").nth(1).unwrap_or_default();
        assert!(
            first_path.starts_with("/signup\""),
            "{}",
            &first_path[..40.min(first_path.len())]
        );
    }

    #[test]
    fn every_asset_the_page_loads_is_served() {
        let page = std::str::from_utf8(PAGE).expect("UTF-8");
        let mut referenced = 0;
        for part in page.split("/docs/assets/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(
                ASSETS.iter().any(|a| a.name == name),
                "the page loads {name}, which is not served"
            );
            referenced += 1;
        }
        assert_eq!(referenced, 4, "two scripts and two style sheets");
        assert!(
            !page.contains("<script>"),
            "no inline script: the CSP forbids it"
        );
        assert!(
            !page.contains("style="),
            "no inline style: the CSP forbids it"
        );
    }
}
