//! Checks Chat API answers against `spec/openapi.yaml`, so that the document cannot drift from
//! the server: every answer a test receives must be to a documented operation, with a documented
//! status, and its JSON body must validate against the documented schema (OpenAPI 3.1 schemas
//! are JSON Schema 2020-12). Error answers must also carry a code that the document allows for
//! their status.
//!
//! The document is loaded once. Its schemas are compiled once, with the whole document
//! registered as one resource, so that `#/components/schemas/...` references resolve without any
//! network access.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use jsonschema::{Draft, Registry, Validator};
use reqwest::Method;
use serde_json::Value;

/// The document, as the server embeds it.
const YAML: &str = include_str!("../../spec/openapi.yaml");

/// The URI the document is registered under; schema references point into it.
const DOC_URI: &str = "urn:roost:chat-openapi";

/// The methods an operation can have (OpenAPI path item keys we use).
pub const METHODS: [&str; 4] = ["get", "post", "put", "delete"];

/// One documented operation.
pub struct Operation {
    /// Upper case, as in HTTP.
    pub method: String,
    /// The path template, as written in the document (`/messages/{id}`).
    pub template: String,
    /// `None` for a parameter segment.
    segments: Vec<Option<String>>,
    pub secured: bool,
    /// Status → what the answer carries.
    pub responses: BTreeMap<u16, Answer>,
}

/// A documented answer.
pub struct Answer {
    /// The media types of the body; empty when the answer has none.
    pub content_types: Vec<String>,
    /// The compiled schema of an `application/json` body.
    json: Option<Validator>,
}

pub struct Spec {
    pub doc: Value,
    pub operations: Vec<Operation>,
    /// Error code → the statuses it may come with (`x-statuses` of `ErrorCode`).
    pub code_statuses: BTreeMap<String, BTreeSet<u16>>,
    components: BTreeMap<String, Validator>,
}

fn registry() -> &'static Registry<'static> {
    static REGISTRY: OnceLock<Registry<'static>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        Registry::new()
            .add(
                DOC_URI,
                Draft::Draft202012.create_resource(document().clone()),
            )
            .and_then(|builder| builder.prepare())
            .unwrap_or_else(|e| panic!("spec/openapi.yaml cannot be registered: {e}"))
    })
}

fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        serde_norway::from_str(YAML)
            .unwrap_or_else(|e| panic!("spec/openapi.yaml does not parse: {e}"))
    })
}

/// The parsed document with every response schema compiled.
pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(load)
}

/// A validator for the schema at `pointer` (a JSON pointer into the document).
fn compile(pointer: &str) -> Validator {
    // A JSON pointer in a URI fragment is percent-encoded (RFC 6901, section 6).
    let fragment: String = pointer
        .chars()
        .map(|c| match c {
            '{' => "%7B".to_owned(),
            '}' => "%7D".to_owned(),
            ' ' => "%20".to_owned(),
            c => c.to_string(),
        })
        .collect();
    let wrapper = serde_json::json!({ "$ref": format!("{DOC_URI}#{fragment}") });
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .with_registry(registry())
        .build(&wrapper)
        .unwrap_or_else(|e| panic!("spec/openapi.yaml: the schema at {pointer} is invalid: {e}"))
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Follows an OpenAPI `$ref` (to `#/components/responses/...` and the like) to its target and
/// returns it with its pointer.
fn deref<'a>(doc: &'a Value, value: &'a Value, pointer: String) -> (&'a Value, String) {
    match value.get("$ref").and_then(Value::as_str) {
        Some(target) => {
            let target = target
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{pointer}: only local references are used: {target}"));
            let value = doc
                .pointer(target)
                .unwrap_or_else(|| panic!("{pointer}: dangling reference #{target}"));
            deref(doc, value, target.to_owned())
        }
        None => (value, pointer),
    }
}

fn load() -> Spec {
    let doc = document();
    let secured_by_default = doc["security"]
        .as_array()
        .is_some_and(|list| !list.is_empty());
    let mut operations = Vec::new();
    let paths = doc["paths"].as_object().expect("paths");
    for (template, item) in paths {
        let segments: Vec<Option<String>> = template
            .split('/')
            .skip(1)
            .map(|s| (!(s.starts_with('{') && s.ends_with('}'))).then(|| s.to_owned()))
            .collect();
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let op_pointer = format!("/paths/{}/{method}", escape(template));
            let secured = match op.get("security").and_then(Value::as_array) {
                Some(list) => !list.is_empty() && !list.iter().any(|s| s == &serde_json::json!({})),
                None => secured_by_default,
            };
            let mut responses = BTreeMap::new();
            let listed = op["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{op_pointer}: no responses"));
            for (status, response) in listed {
                let status: u16 = status
                    .parse()
                    .unwrap_or_else(|_| panic!("{op_pointer}: status {status} is not a number"));
                let (response, pointer) =
                    deref(doc, response, format!("{op_pointer}/responses/{status}"));
                let content = response.get("content").and_then(Value::as_object);
                let content_types = content
                    .map(|c| c.keys().cloned().collect())
                    .unwrap_or_default();
                let json = content
                    .and_then(|c| c.get("application/json"))
                    .map(|_| compile(&format!("{pointer}/content/application~1json/schema")));
                responses.insert(
                    status,
                    Answer {
                        content_types,
                        json,
                    },
                );
            }
            operations.push(Operation {
                method: method.to_uppercase(),
                template: template.clone(),
                segments: segments.clone(),
                secured,
                responses,
            });
        }
    }
    let components = doc["components"]["schemas"]
        .as_object()
        .expect("components.schemas")
        .keys()
        .map(|name| {
            let validator = compile(&format!("/components/schemas/{}", escape(name)));
            (name.clone(), validator)
        })
        .collect();
    let code_statuses = doc["components"]["schemas"]["ErrorCode"]["x-statuses"]
        .as_object()
        .expect("ErrorCode has x-statuses")
        .iter()
        .map(|(code, statuses)| {
            let statuses = statuses
                .as_array()
                .expect("x-statuses lists statuses")
                .iter()
                .map(|s| {
                    s.as_u64()
                        .and_then(|s| u16::try_from(s).ok())
                        .expect("a status")
                })
                .collect();
            (code.clone(), statuses)
        })
        .collect();
    Spec {
        doc: doc.clone(),
        operations,
        code_statuses,
        components,
    }
}

impl Operation {
    /// Whether the template matches the concrete path's segments.
    fn matches(&self, segments: &[&str]) -> bool {
        self.segments.len() == segments.len()
            && self
                .segments
                .iter()
                .zip(segments)
                .all(|(template, actual)| match template {
                    Some(literal) => literal == actual,
                    None => !actual.is_empty(),
                })
    }
}

impl Spec {
    /// The template that serves a concrete path (its query string is ignored): as the router
    /// does, a literal segment wins over a parameter at the first position where two matching
    /// templates differ (`/users/blocked` over `/users/{id}`).
    pub fn template_of(&self, path: &str) -> Option<&str> {
        let path = path.split('?').next().unwrap_or_default();
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        self.operations
            .iter()
            .filter(|op| op.matches(&segments))
            .min_by_key(|op| {
                op.segments
                    .iter()
                    .map(|s| u8::from(s.is_none()))
                    .collect::<Vec<_>>()
            })
            .map(|op| op.template.as_str())
    }

    /// The operation for `method path`, if documented.
    pub fn operation(&self, method: &str, path: &str) -> Option<&Operation> {
        let template = self.template_of(path)?;
        self.operations
            .iter()
            .find(|op| op.template == template && op.method.eq_ignore_ascii_case(method))
    }

    /// The validation errors of `value` against `#/components/schemas/{name}`.
    pub fn schema_errors(&self, name: &str, value: &Value) -> Vec<String> {
        let validator = self
            .components
            .get(name)
            .unwrap_or_else(|| panic!("no schema {name} in spec/openapi.yaml"));
        errors(validator, value)
    }
}

fn errors(validator: &Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| {
            let at = e.instance_path().to_string();
            let at = if at.is_empty() { "/".to_owned() } else { at };
            format!("at {at}: {e} (schema {})", e.schema_path())
        })
        .collect()
}

/// The documented answer for `method path` with `status`; panics when there is none.
fn answer(
    method: &Method,
    path: &str,
    status: u16,
    body: &dyn std::fmt::Display,
) -> &'static Answer {
    let spec = spec();
    let Some(template) = spec.template_of(path) else {
        panic!("{method} {path}: no such path in spec/openapi.yaml (answer {status}: {body})");
    };
    let Some(op) = spec.operation(method.as_str(), path) else {
        panic!(
            "{method} {template}: the method is not documented in spec/openapi.yaml (answer {status}: {body})"
        );
    };
    op.responses.get(&status).unwrap_or_else(|| {
        panic!(
            "{method} {template}: status {status} is not documented in spec/openapi.yaml \
             (documented: {:?}); body: {body}",
            op.responses.keys().collect::<Vec<_>>()
        )
    })
}

/// Fails when the document does not describe `status` for `method path`, or when `body` does not
/// match the schema it gives.
pub fn check_response(method: &Method, path: &str, status: u16, body: &Value) {
    let answer = answer(method, path, status, body);
    let spec = spec();
    let template = spec.template_of(path).unwrap_or(path);
    if answer.content_types.is_empty() {
        assert!(
            body.is_null(),
            "{method} {template} {status}: the document says there is no body, but there is: {body}"
        );
        return;
    }
    let Some(validator) = &answer.json else {
        panic!(
            "{method} {template} {status}: the document describes {:?}, not JSON; body: {body}",
            answer.content_types
        );
    };
    assert!(
        !body.is_null(),
        "{method} {template} {status}: the document describes a JSON body, but there is none"
    );
    let problems = errors(validator, body);
    assert!(
        problems.is_empty(),
        "{method} {template} {status}: the body does not match spec/openapi.yaml:\n  {}\nbody: {body}",
        problems.join("\n  ")
    );
    if let Some(code) = body["error"]["code"].as_str() {
        let allowed = spec.code_statuses.get(code);
        assert!(
            allowed.is_some_and(|statuses| statuses.contains(&status)),
            "{method} {template} {status}: error code {code} is documented with status {:?} \
             only; body: {body}",
            allowed
                .map(|s| s.iter().collect::<Vec<_>>())
                .unwrap_or_default()
        );
    }
}

/// For answers that are not JSON (the docs page and its assets): the status must be documented
/// and the media type (without parameters) listed for it.
pub fn check_raw(method: &Method, path: &str, status: u16, content_type: &str) {
    let answer = answer(method, path, status, &format!("<{content_type}>"));
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    assert!(
        answer.content_types.iter().any(|t| t == media_type),
        "{method} {path} {status}: {media_type} is not documented (documented: {:?})",
        answer.content_types
    );
}

/// Fails when `value` does not validate against `#/components/schemas/{name}` (used for the
/// WebSocket frames, which have no HTTP answer to check).
pub fn check_schema(name: &str, value: &Value) {
    let problems = spec().schema_errors(name, value);
    assert!(
        problems.is_empty(),
        "{name} does not match spec/openapi.yaml:\n  {}\nvalue: {value}",
        problems.join("\n  ")
    );
}
