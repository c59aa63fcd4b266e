//! The OpenAPI conformance checker: every REST answer in a fake GitHub's request log is checked
//! against `runners-openapi.json` (GitHub's own description): its operation (method + path
//! template), its status code, and its body against the schema for that status, or against
//! `basic-error` for an error status the operation does not list. The JSON-schema crate validates;
//! this file only finds the schema and rewrites OpenAPI 3.0 `nullable` into JSON Schema. For the
//! fake's own tests and for sysrunner's client tests, which both check what the fake answered.

use crate::fake_github::RequestRecord;
use serde_json::{Map, Value, json};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The workspace's root: the source tree this library was built from, two levels above it.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where the description lives: `$SYSRUNNER_OPENAPI`, else `../shared/github-api/runners-openapi.json`
/// beside the workspace's root (the project's shared contracts), else the copy this package keeps
/// in `tests/fixtures/github-api/` for machines without the shared directory (GitHub-hosted CI, a
/// clone elsewhere); `the_kept_copy_of_the_description_is_the_shared_one` keeps the two equal.
pub fn document_path() -> PathBuf {
    match std::env::var_os("SYSRUNNER_OPENAPI") {
        Some(p) => PathBuf::from(p),
        None => {
            let shared = shared_document_path();
            if shared.exists() {
                shared
            } else {
                kept_copy_path()
            }
        }
    }
}

pub fn shared_document_path() -> PathBuf {
    workspace_root().join("../shared/github-api/runners-openapi.json")
}

pub fn kept_copy_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/github-api/runners-openapi.json")
}

/// REST paths GitHub serves that the description leaves out, and that the checker therefore
/// accepts; the rule for every other undocumented path stays (a success answer there is a
/// departure). Each entry: method, path, and what its answer must hold instead of a schema.
///
/// - `POST /actions/runner-registration`: the scale set client's exchange of a registration
///   token for the Actions-service URL and an admin token (`shared/SCALESET.md` §1,
///   `getActionsServiceAdminConnection`); any 2xx with `{"url", "token"}`, both non-empty.
///
/// The Actions service itself (`/_actions/…`) is not GitHub's REST API: the fake logs its calls
/// without an `api_path`, like its other own protocols, so they are out of this checker's scope.
pub const UNDOCUMENTED_EXCEPTIONS: &[(&str, &str)] = &[("POST", "/actions/runner-registration")];

fn is_documented_exception(method: &str, path: &str) -> bool {
    UNDOCUMENTED_EXCEPTIONS
        .iter()
        .any(|(m, p)| m.eq_ignore_ascii_case(method) && *p == path)
}

/// One operation of the description.
#[derive(Debug, Clone)]
pub struct Operation {
    pub method: String,
    pub template: String,
    segments: Vec<Option<String>>,
    /// JSON pointer of the operation object.
    pointer: String,
}

pub struct OpenApi {
    doc: Value,
    ops: Vec<Operation>,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

/// The loaded description, once per test binary. `None` (with a note on stderr) when the file is
/// missing outside CI; in CI (`CI=true`) a missing file fails the test.
pub fn load() -> Option<&'static OpenApi> {
    static DOC: OnceLock<Option<OpenApi>> = OnceLock::new();
    DOC.get_or_init(|| {
        let path = document_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let doc: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
                Some(OpenApi::new(doc))
            }
            Err(e) => {
                let msg = format!(
                    "the OpenAPI description is not at {} ({e}); the shared directory must sit beside the crate \
                     (or set SYSRUNNER_OPENAPI): the conformance check cannot run",
                    path.display()
                );
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("{msg}");
                }
                eprintln!("skipping the conformance check outside CI: {msg}");
                None
            }
        }
    })
    .as_ref()
}

/// OpenAPI 3.0's `nullable: true` as JSON Schema: `null` joins the type (or the enum, or the
/// alternatives); a schema without `type` is wrapped in `anyOf [it, null]`.
pub fn nullable_to_json_schema(v: &mut Value) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(nullable_to_json_schema),
        Value::Object(m) => {
            for child in m.values_mut() {
                nullable_to_json_schema(child);
            }
            if m.get("nullable") != Some(&Value::Bool(true)) {
                return;
            }
            m.remove("nullable");
            if let Some(Value::Array(e)) = m.get_mut("enum") {
                e.push(Value::Null);
            }
            if let Some(Value::String(t)) = m.get("type").cloned() {
                m.insert("type".into(), json!([t, "null"]));
            } else if let Some(Value::Array(alts)) = m.get_mut("anyOf") {
                alts.push(json!({"type": "null"}));
            } else if let Some(Value::Array(alts)) = m.get_mut("oneOf") {
                alts.push(json!({"type": "null"}));
            } else {
                let inner = Value::Object(std::mem::take(m));
                m.insert("anyOf".into(), json!([inner, {"type": "null"}]));
            }
        }
        _ => {}
    }
}

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

impl OpenApi {
    pub fn new(mut doc: Value) -> OpenApi {
        nullable_to_json_schema(&mut doc);
        let mut ops = vec![];
        for (path, item) in doc["paths"].as_object().expect("paths").iter() {
            for method in ["get", "post", "put", "patch", "delete"] {
                if item.get(method).is_some() {
                    ops.push(Operation {
                        method: method.to_uppercase(),
                        template: path.clone(),
                        segments: path
                            .trim_start_matches('/')
                            .split('/')
                            .map(|s| (!s.starts_with('{')).then(|| s.to_string()))
                            .collect(),
                        pointer: format!("/paths/{}/{method}", escape(path)),
                    });
                }
            }
        }
        OpenApi {
            doc,
            ops,
            validators: Mutex::new(HashMap::new()),
        }
    }

    pub fn operations(&self) -> &[Operation] {
        &self.ops
    }

    pub fn operation(&self, op: &Operation) -> &Value {
        self.doc.pointer(&op.pointer).expect("operation exists")
    }

    /// The operation for a method and path: the template with the most literal segments wins
    /// (`…/runners/downloads` over `…/runners/{runner_id}`).
    pub fn find(&self, method: &str, path: &str) -> Option<&Operation> {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        self.ops
            .iter()
            .filter(|op| op.method.eq_ignore_ascii_case(method) && op.segments.len() == segs.len())
            .filter(|op| {
                op.segments
                    .iter()
                    .zip(&segs)
                    .all(|(t, s)| !s.is_empty() && t.as_deref().is_none_or(|lit| lit == *s))
            })
            .max_by_key(|op| op.segments.iter().filter(|s| s.is_some()).count())
    }

    /// Follows a `$ref` inside the document; returns the target and its pointer.
    fn deref<'a>(&'a self, v: &'a Value, pointer: String) -> (&'a Value, String) {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let p = r.trim_start_matches('#').to_string();
                let target = self
                    .doc
                    .pointer(&p)
                    .unwrap_or_else(|| panic!("dangling $ref {r}"));
                self.deref(target, p)
            }
            None => (v, pointer),
        }
    }

    fn validator(&self, pointer: &str) -> Arc<jsonschema::Validator> {
        let mut cache = self.validators.lock().unwrap();
        if let Some(v) = cache.get(pointer) {
            return v.clone();
        }
        // The schema under test sits beside the document's components, so that its
        // `#/components/...` references resolve inside one root.
        let mut root = Map::new();
        root.insert("$ref".into(), json!("#/__target"));
        root.insert(
            "__target".into(),
            self.doc.pointer(pointer).expect("schema").clone(),
        );
        root.insert("components".into(), self.doc["components"].clone());
        let v = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .should_validate_formats(true)
            .build(&Value::Object(root))
            .unwrap_or_else(|e| panic!("schema at {pointer} does not compile: {e}"));
        let v = Arc::new(v);
        cache.insert(pointer.to_string(), v.clone());
        v
    }

    fn validate(&self, pointer: &str, body: &Value) -> Vec<String> {
        self.validator(pointer)
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    /// Every way one logged exchange departs from the description (empty when it conforms).
    pub fn check_record(&self, r: &RequestRecord) -> Vec<String> {
        let (Some(status), Some(path)) = (r.status, r.api_path.as_deref()) else {
            return vec![]; // no answer (a hang), or the fake's own protocols (the Actions service among them)
        };
        let mut bad = vec![];
        for h in [
            "x-github-request-id",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "x-ratelimit-used",
            "x-ratelimit-resource",
        ] {
            if !r.response_headers.contains_key(h) {
                bad.push(format!("header {h} missing"));
            }
        }
        let basic_error = "/components/schemas/basic-error".to_string();
        let check_error = |bad: &mut Vec<String>| match &r.response_body {
            Some(body) if body["message"].is_string() => {
                bad.extend(self.validate(&basic_error, body))
            }
            other => bad.push(format!(
                "an error answer needs a basic-error body with a message, got {other:?}"
            )),
        };
        match self.find(&r.method, path) {
            None if status >= 400 => check_error(&mut bad),
            None if is_documented_exception(&r.method, path) => {
                let body = r.response_body.as_ref();
                let non_empty = |k: &str| {
                    body.and_then(|b| b[k].as_str())
                        .is_some_and(|s| !s.is_empty())
                };
                if !(200..300).contains(&status) || !non_empty("url") || !non_empty("token") {
                    bad.push(format!(
                        "{status} for {path} (SCALESET.md §1) needs a 2xx {{\"url\", \"token\"}}, got {body:?}"
                    ));
                }
            }
            None => bad.push(format!(
                "answered {status} for a path the description does not have"
            )),
            Some(op) => {
                let key = status.to_string();
                let responses_ptr = format!("{}/responses", op.pointer);
                let documented = self.doc.pointer(&responses_ptr).and_then(|rs| rs.get(&key));
                match documented {
                    Some(resp) => {
                        let (resp, ptr) = self.deref(resp, format!("{responses_ptr}/{key}"));
                        match resp.pointer("/content/application~1json/schema") {
                            Some(_) => {
                                let schema_ptr = format!("{ptr}/content/application~1json/schema");
                                match &r.response_body {
                                    Some(body) => bad.extend(self.validate(&schema_ptr, body)),
                                    None => bad.push(format!("{status} must have a JSON body")),
                                }
                            }
                            None if r.response_body.is_some() => bad.push(format!(
                                "{status} is documented without a body, but one was sent"
                            )),
                            None => {}
                        }
                    }
                    None if status >= 400 => check_error(&mut bad),
                    None => bad.push(format!(
                        "status {status} is not documented for {} {}",
                        op.method, op.template
                    )),
                }
            }
        }
        bad.into_iter()
            .map(|b| format!("#{} {} {} -> {status}: {b}", r.seq, r.method, r.path))
            .collect()
    }

    /// Panics listing every departure; returns how many answers were checked.
    pub fn assert_conforms(&self, records: &[RequestRecord]) -> usize {
        let bad: Vec<String> = records.iter().flat_map(|r| self.check_record(r)).collect();
        assert!(
            bad.is_empty(),
            "answers departing from runners-openapi.json:\n{}",
            bad.join("\n")
        );
        records
            .iter()
            .filter(|r| r.status.is_some() && r.api_path.is_some())
            .count()
    }

    /// The operations these records exercised with a documented success status.
    pub fn covered(&self, records: &[RequestRecord]) -> BTreeSet<(String, String)> {
        records
            .iter()
            .filter_map(|r| {
                let op = self.find(&r.method, r.api_path.as_deref()?)?;
                let ok = (200..300).contains(&r.status?);
                ok.then(|| (op.method.clone(), op.template.clone()))
            })
            .collect()
    }
}
