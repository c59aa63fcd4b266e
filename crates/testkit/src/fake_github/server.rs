//! The HTTP side: accepting connections, reading a request, picking the protocol by path prefix,
//! applying injected faults, recording the exchange, writing the answer. Knows no GitHub rules;
//! those are in `rest`, `auth`, `runner_api`, `actions` and `control`.

use super::state::State;
use super::wire::{Fault, Outcome, RequestRecord};
use super::{actions, control, rest, runner_api};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// What every connection task shares.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Woken whenever jobs or runners change, for long polls.
    pub changed: Notify,
    /// `http://ADDR`, no trailing slash.
    pub web_url: String,
}

impl Shared {
    pub(crate) fn new(state: State, web_url: String) -> Shared {
        Shared {
            state: Mutex::new(state),
            changed: Notify::new(),
            web_url,
        }
    }

    /// The state lock. Never held across an await: every handler is a synchronous step.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A handler that panicked left the state as it was at the panic; the fake goes on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A request, read whole.
pub(crate) struct Req {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The last value of a query parameter, percent-decoded.
    pub(crate) fn query_param(&self, name: &str) -> Option<String> {
        let q = self.query.as_deref()?;
        url::form_urlencoded::parse(q.as_bytes())
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .last()
    }

    pub(crate) fn body_json(&self) -> Option<Value> {
        if self.body.is_empty() {
            return None;
        }
        serde_json::from_slice(&self.body).ok()
    }
}

/// An answer before it is written.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

/// Where GitHub's error bodies point.
pub(crate) const DOCS_URL: &str = "https://docs.github.com/rest";

impl Reply {
    pub(crate) fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: Some(body),
        }
    }

    pub(crate) fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: None,
        }
    }

    /// GitHub's `basic-error` body. `documentation_url` is always there, so the same body also
    /// satisfies `validation-error-simple` (which requires it) where an operation documents that.
    pub(crate) fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::json(
            status,
            json!({
                "message": message.into(),
                "documentation_url": DOCS_URL,
                "status": status.to_string(),
            }),
        )
    }

    pub(crate) fn not_found() -> Reply {
        Reply::error(404, "Not Found")
    }

    pub(crate) fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

/// Runs the accept loop until the task is aborted; aborting it drops every connection.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while conns.try_join_next().is_some() {}
        let shared = shared.clone();
        conns.spawn(async move {
            // A fault that must end the connection without an answer notifies `kill`; dropping
            // the connection future then closes the socket with nothing written.
            let kill = Arc::new(Notify::new());
            let k = kill.clone();
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                let kill = k.clone();
                async move { Ok::<_, Infallible>(handle(shared, kill, req).await) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = kill.notified() => {}
            }
        });
    }
}

/// Which protocol a path belongs to, and the path its rules see.
enum Route {
    Control,
    Runner,
    /// The Actions service of the scale set API (`/_actions/{scope}/…`): not GitHub's REST API.
    Actions,
    /// GitHub REST; `prefix` is the base path it came under ("" at the root).
    Rest {
        api_path: String,
        prefix: String,
    },
}

fn route(base_path: &str, path: &str) -> Route {
    if path == "/_fake/control" || path.starts_with("/_fake/control/") {
        return Route::Control;
    }
    if path.starts_with("/_fake/runner/") {
        return Route::Runner;
    }
    if actions::owns(path) {
        return Route::Actions;
    }
    if !base_path.is_empty()
        && let Some(rest) = path.strip_prefix(base_path)
        && (rest.is_empty() || rest.starts_with('/'))
    {
        let api_path = if rest.is_empty() { "/" } else { rest };
        return Route::Rest {
            api_path: api_path.to_string(),
            prefix: base_path.to_string(),
        };
    }
    Route::Rest {
        api_path: path.to_string(),
        prefix: String::new(),
    }
}

async fn handle(
    shared: Arc<Shared>,
    kill: Arc<Notify>,
    req: hyper::Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let req = Req {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
    };
    let base_path = {
        let mut st = shared.lock();
        // Runners whose listener went silent are offline before anyone looks.
        if !st.lapse_runner_sessions().is_empty() {
            shared.changed.notify_waiters();
        }
        st.cfg.base_path.clone()
    };
    let route = route(&base_path, &req.path);
    let (api_path, prefix) = match &route {
        Route::Control => return to_response(&control::handle(&shared, &req).await),
        Route::Runner | Route::Actions => (None, String::new()),
        Route::Rest { api_path, prefix } => (Some(api_path.clone()), prefix.clone()),
    };
    let is_actions = matches!(route, Route::Actions);
    let match_path = api_path.clone().unwrap_or_else(|| req.path.clone());
    let (seq, fault) = {
        let mut st = shared.lock();
        (st.next_seq(), st.take_fault(&req.method, &match_path))
    };
    let mut record = RequestRecord {
        seq,
        method: req.method.clone(),
        path: req.path.clone(),
        api_path: api_path.clone(),
        query: req.query.clone(),
        request_headers: logged_headers(&shared, &req),
        request_body: req.body_json(),
        status: None,
        response_headers: BTreeMap::new(),
        response_body: None,
        outcome: Outcome::Answered,
        fault: fault.as_ref().map(|(id, _)| *id),
    };
    let dispatch = |shared: &Arc<Shared>| {
        let shared = shared.clone();
        let req = &req;
        let prefix = prefix.clone();
        let api_path = api_path.clone();
        async move {
            match api_path {
                Some(p) => rest::handle(&shared, req, &p, &prefix),
                None if is_actions => actions::handle(&shared, req).await,
                None => runner_api::handle(&shared, req).await,
            }
        }
    };
    let reply = match fault {
        Some((_, Fault::Hang { millis })) => {
            record.outcome = Outcome::Hung;
            shared.lock().push_log(record);
            tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
            kill.notify_one();
            return std::future::pending().await;
        }
        Some((_, Fault::DropAfterEffect)) => {
            let reply = dispatch(&shared).await;
            record.outcome = Outcome::Dropped;
            fill(&mut record, &reply);
            shared.lock().push_log(record);
            shared.changed.notify_waiters();
            kill.notify_one();
            return std::future::pending().await;
        }
        Some((_, f)) => {
            let reply = fault_reply(&f, &shared);
            if api_path.is_some() {
                let rate = shared.lock().rate_info();
                rest::with_common_headers(reply, rate)
            } else if is_actions {
                // The same fault in the Actions service's own error shape.
                let message = reply
                    .body
                    .as_ref()
                    .and_then(|b| b["message"].as_str())
                    .unwrap_or("")
                    .to_string();
                let mut r = actions::error(reply.status, "InjectedFaultException", message);
                r.headers = reply.headers;
                r
            } else {
                reply
            }
        }
        None => dispatch(&shared).await,
    };
    fill(&mut record, &reply);
    shared.lock().push_log(record);
    shared.changed.notify_waiters();
    to_response(&reply)
}

/// The answer an injected fault gives in place of the real one; nothing else happens.
fn fault_reply(f: &Fault, shared: &Shared) -> Reply {
    match f {
        Fault::ServerError { status } => {
            let status = if (500..600).contains(status) {
                *status
            } else {
                500
            };
            Reply::error(status, "Server Error")
        }
        Fault::TooManyRequests { retry_after_secs } => Reply::error(429, "Too Many Requests")
            .header("retry-after", retry_after_secs.to_string()),
        Fault::RateLimited { reset_after_secs } => {
            let st = shared.lock();
            let reset = st.now() + *reset_after_secs as i64;
            let limit = st.cfg.rate_limit;
            drop(st);
            // These headers replace the usual ones (`with_common_headers` keeps existing names).
            Reply::error(
                403,
                "API rate limit exceeded for installation. If you reach out to GitHub Support for help, please include the request ID.",
            )
            .header("x-ratelimit-limit", limit.to_string())
            .header("x-ratelimit-remaining", "0")
            .header("x-ratelimit-reset", reset.to_string())
            .header("x-ratelimit-used", limit.to_string())
            .header("x-ratelimit-resource", "core")
        }
        Fault::SecondaryRateLimit { retry_after_secs } => {
            let r = Reply::error(
                403,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID.",
            );
            match retry_after_secs {
                Some(s) => r.header("retry-after", s.to_string()),
                None => r,
            }
        }
        Fault::Hang { .. } | Fault::DropAfterEffect => unreachable!("handled by the caller"),
    }
}

fn logged_headers(shared: &Shared, req: &Req) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in [
        "user-agent",
        "accept",
        "content-type",
        "x-github-api-version",
    ] {
        if let Some(v) = req.header(name) {
            out.insert(name.to_string(), v.to_string());
        }
    }
    if let Some(h) = req.header("authorization") {
        if actions::owns(&req.path) {
            out.insert("authorization".into(), actions::redact(&shared.lock(), h));
            return out;
        }
        if h.trim_start()
            .get(..11)
            .is_some_and(|s| s.eq_ignore_ascii_case("RemoteAuth "))
        {
            out.insert(
                "authorization".into(),
                "RemoteAuth <registration-token>".into(),
            );
            return out;
        }
        let cred = if req.path.starts_with("/_fake/runner/") {
            super::auth::Cred::None
        } else {
            super::auth::classify(&shared.lock(), Some(h))
        };
        let shown = match cred {
            super::auth::Cred::None => {
                let scheme = h.split_whitespace().next().unwrap_or("");
                format!("{scheme} <runner>")
            }
            c => c.redacted(Some(h)).unwrap_or_default(),
        };
        out.insert("authorization".into(), shown);
    }
    out
}

fn fill(record: &mut RequestRecord, reply: &Reply) {
    record.status = Some(reply.status);
    record.response_headers = reply
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    if reply.body.is_some() {
        record.response_headers.insert(
            "content-type".into(),
            "application/json; charset=utf-8".into(),
        );
    }
    record.response_body = reply.body.clone();
}

pub(crate) fn to_response(reply: &Reply) -> Response<Full<Bytes>> {
    let body = match &reply.body {
        Some(v) => Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
        None => Bytes::new(),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = hyper::StatusCode::from_u16(reply.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    if reply.body.is_some() {
        h.insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    for (k, v) in &reply.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.append(name, value);
        }
    }
    resp
}
