//! The Actions-service client: the admin connection (a registration token from the REST client,
//! exchanged at `{api}/actions/runner-registration` for the service's URL and an admin JWT,
//! renewed before its `exp`), one `send` that authenticates, retries and classifies, and the
//! operations on scale sets, runner groups, JIT configs, runners, sessions and the message queue.
//!
//! Shared with the REST client (`crate::github`): its authentication (PAT or GitHub App; the
//! registration token comes from it, with its App-token caching and its retries) and its retry
//! rules (`github::retry::decide`: 429 and 5xx and transport failures, `Retry-After`, back-off
//! 1 s × 2ⁿ capped at 30 s with jitter, within the operation's deadline). Where they differ, as
//! GitHub's own client (`actions/scaleset` `common_client.go`) does: a 501 is an answer, not
//! retried; `runner-registration` alone also retries 401 and 403 (a registration token may not
//! have reached the service yet); nothing sends GitHub's `Accept` or API-version headers, the
//! service's `api-version=6.0-preview` query instead; and the queue's long poll gets its own
//! timeout ([`Options::poll_timeout`]).

use super::types::*;
use crate::config::Scope;
use crate::github::retry::{self, Attempt, Decision, RateHeaders, Time};
use crate::github::{ApiError, Client as RestClient};
use crate::secret::Secret;
use base64::Engine;
use reqwest::Method;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

/// The query every service request carries (the queue's GET carries it in `Accept` instead).
pub const API_VERSION: &str = "api-version=6.0-preview";
/// `_apis/runtime/runnerscalesets`.
const SCALE_SETS: &str = "_apis/runtime/runnerscalesets";
/// `_apis/distributedtask/pools/0/agents`.
const AGENTS: &str = "_apis/distributedtask/pools/0/agents";
/// How often runner-registration's 401 or 403 is tried again (GitHub's client: 4 retries).
const AUTH_RETRIES: u32 = 4;
/// The admin token is renewed this long before its `exp`, as GitHub's client does.
pub const RENEW_BEFORE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ScalesetError {
    /// The REST side (the registration token) failed.
    #[error(transparent)]
    Rest(#[from] ApiError),
    /// An answer the caller must interpret: `type_name` is the service's exception name
    /// (`AgentExistsException`, `RunnerScaleSetSessionConflictException`, …).
    #[error("the Actions service refused {what}: {status} {type_name}: {message}")]
    Refused {
        what: String,
        status: u16,
        type_name: String,
        message: String,
    },
    #[error(
        "the Actions service did not answer {what} after {attempts} attempts in {elapsed:?} (API_DEADLINE {deadline:?}); last: {last}"
    )]
    Unavailable {
        what: String,
        attempts: u32,
        elapsed: Duration,
        deadline: Duration,
        last: String,
    },
    #[error("unexpected answer to {what}: {detail}")]
    Unexpected { what: String, detail: String },
    /// Another listener holds the scale set's message session, and it did not go.
    #[error(
        "scale set {scale_set} already has an active message session after {attempts} attempts over {waited:?}: another `sysrunner scale` (or an earlier one that was killed) holds it. Stop the other one, or wait for GitHub to expire the session (a few minutes), then start again"
    )]
    SessionConflict {
        scale_set: u64,
        attempts: u32,
        waited: Duration,
    },
}

impl ScalesetError {
    /// The service's exception name, when it gave one.
    pub fn type_name(&self) -> Option<&str> {
        match self {
            ScalesetError::Refused { type_name, .. } => Some(type_name),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ScalesetError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub struct Options {
    /// Per request (API_TIMEOUT).
    pub request_timeout: Duration,
    /// Per operation with its retries (API_DEADLINE).
    pub deadline: Duration,
    /// Per poll of the message queue: the service holds it up to ~50 s before a 202.
    pub poll_timeout: Duration,
    pub time: Arc<dyn Time>,
}

/// The admin connection: where the service is and the token it takes.
struct Admin {
    service: String,
    token: Secret,
    exp: Option<SystemTime>,
}

/// `exp` of a JWT, read without verifying it (GitHub's client does the same).
pub fn jwt_exp(token: &str) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    // An `exp` past what the clock can hold is unknown, not a panic (found by tests/parsers_fuzz.rs).
    UNIX_EPOCH.checked_add(Duration::from_secs(v.get("exp")?.as_u64()?))
}

/// Whether a token with this `exp` must be renewed before a request sent `now`: when its expiry
/// is unknown, or within [`RENEW_BEFORE`].
pub fn needs_renewal(exp: Option<SystemTime>, now: SystemTime) -> bool {
    exp.is_none_or(|e| now + RENEW_BEFORE >= e)
}

/// `url` with [`API_VERSION`] added to its query.
pub fn with_api_version(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{API_VERSION}")
}

/// Fills in what the service requires of a new or changed scale set: labels (its own name as a
/// `System` label when none are given) and each label's type (`System` when empty).
pub fn ensure_labels(mut s: ScaleSet) -> ScaleSet {
    if s.labels.is_empty() && !s.name.is_empty() {
        s.labels.push(ScaleSetLabel {
            kind: "System".into(),
            name: s.name.clone(),
        });
    }
    for l in &mut s.labels {
        if l.kind.is_empty() {
            l.kind = "System".into();
        }
    }
    s
}

struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    /// The body with a UTF-8 BOM stripped, as GitHub's client reads it.
    fn text(&self) -> &[u8] {
        self.body
            .strip_prefix(b"\xEF\xBB\xBF".as_slice())
            .unwrap_or(&self.body)
    }

    fn error(&self) -> ErrorBody {
        serde_json::from_slice::<ErrorBody>(self.text()).unwrap_or_else(|_| ErrorBody {
            type_name: None,
            message: Some(
                String::from_utf8_lossy(self.text())
                    .chars()
                    .take(200)
                    .collect(),
            ),
        })
    }
}

/// How a request is addressed and authorised.
enum Target<'a> {
    /// A path under the service URL, with the admin token, or `bearer` (acquire-jobs takes the
    /// queue's token).
    Service {
        path: &'a str,
        bearer: Option<&'a Secret>,
    },
    /// The message queue (an absolute URL), with its token and the capacity header on a poll.
    Queue {
        url: &'a str,
        token: &'a Secret,
        max_capacity: Option<u32>,
    },
}

/// A JIT configuration of a scale set: the runner it made, and the blob for the runner.
#[derive(Debug, Clone)]
pub struct ScaleSetJit {
    pub runner: RunnerRef,
    pub encoded: Secret,
}

/// What a message-queue call got.
#[derive(Debug)]
pub enum QueueAnswer<T> {
    Ok(T),
    /// 401: the queue token expired; refresh the session.
    TokenExpired,
}

pub struct ActionsClient {
    rest: Arc<RestClient>,
    api: String,
    config_url: String,
    http: reqwest::Client,
    opts: Options,
    admin: Mutex<Option<Admin>>,
}

impl ActionsClient {
    /// `rest` gives the registration tokens (with its PAT or App); `api` is its REST base,
    /// `web` GitHub's web URL (GITHUB_URL), from which the config URL of `scope` is made.
    pub fn new(
        rest: Arc<RestClient>,
        api: &str,
        web: &str,
        scope: &Scope,
        opts: Options,
    ) -> Result<ActionsClient, ScalesetError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!(
                "sysrunner/",
                env!("CARGO_PKG_VERSION"),
                " (scaleset)"
            ))
            .build()
            .map_err(|e| ScalesetError::Unexpected {
                what: "HTTP client setup".into(),
                detail: e.to_string(),
            })?;
        Ok(ActionsClient {
            rest,
            api: api.trim_end_matches('/').to_string(),
            config_url: format!("{}{}", web.trim_end_matches('/'), scope.web_path()),
            http,
            opts,
            admin: Mutex::new(None),
        })
    }

    /// The config URL the admin connection is asked for (`<web>/org`, `<web>/owner/repo`,
    /// `<web>/enterprises/e`).
    pub fn config_url(&self) -> &str {
        &self.config_url
    }

    fn unexpected(what: &str, detail: impl ToString) -> ScalesetError {
        ScalesetError::Unexpected {
            what: what.into(),
            detail: detail.to_string(),
        }
    }

    fn refused(what: &str, a: &Answer) -> ScalesetError {
        let e = a.error();
        ScalesetError::Refused {
            what: what.into(),
            status: a.status,
            type_name: e.type_name.unwrap_or_default(),
            message: e.message.unwrap_or_default(),
        }
    }

    /// The service URL and admin token, renewed first when it is unknown or about to expire. A
    /// failed renewal keeps the old token and fails the call.
    async fn admin(&self) -> Result<(String, Secret), ScalesetError> {
        let mut admin = self.admin.lock().await;
        if let Some(a) = admin.as_ref()
            && !needs_renewal(a.exp, self.opts.time.now())
        {
            return Ok((a.service.clone(), a.token.clone()));
        }
        let fresh = self.connect().await?;
        let out = (fresh.service.clone(), fresh.token.clone());
        *admin = Some(fresh);
        Ok(out)
    }

    /// The whole chain: a registration token, then `runner-registration`.
    async fn connect(&self) -> Result<Admin, ScalesetError> {
        let what = "the Actions service's admin connection (runner-registration)";
        let reg = self.rest.registration_token().await?;
        let body = serde_json::json!({"url": self.config_url, "runner_event": "register"});
        let url = format!("{}/actions/runner-registration", self.api);
        let a = self
            .retrying(what, true, || {
                self.http
                    .post(&url)
                    .timeout(self.opts.request_timeout)
                    .header(
                        "Authorization",
                        format!("RemoteAuth {}", reg.token.expose()),
                    )
                    .header("Content-Type", "application/json")
                    .body(body.to_string())
            })
            .await?;
        if !(200..300).contains(&a.status) {
            return Err(Self::refused(what, &a));
        }
        #[derive(serde::Deserialize)]
        struct Connection {
            #[serde(default)]
            url: String,
            #[serde(default)]
            token: String,
        }
        let c: Connection =
            serde_json::from_slice(a.text()).map_err(|e| Self::unexpected(what, e))?;
        if c.url.is_empty() || c.token.is_empty() {
            return Err(Self::unexpected(what, "no service URL or no token"));
        }
        let exp = jwt_exp(&c.token);
        tracing::debug!(
            service = %c.url,
            expires_in_s = exp
                .and_then(|e| e.duration_since(self.opts.time.now()).ok())
                .map(|d| d.as_secs()),
            "connected to the Actions service"
        );
        Ok(Admin {
            service: c.url,
            token: Secret::new(c.token),
            exp,
        })
    }

    /// Sends what `build` makes until an answer is not worth retrying, by the REST client's
    /// rules (see the module doc for where they differ), within the deadline.
    async fn retrying(
        &self,
        what: &str,
        retry_auth: bool,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Answer, ScalesetError> {
        let time = &self.opts.time;
        let start = time.now();
        let mut retries = 0u32;
        loop {
            let transport = |timed_out: bool, detail: String| match retry::decide(
                &Attempt::Transport { timed_out, detail },
                retries,
                time.now(),
                time.jitter(),
            ) {
                Decision::Retry { after, reason } => (after, reason),
                Decision::Answer => (retry::backoff(retries, time.jitter()), "no answer".into()),
            };
            let (after, reason) = match build().send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    match resp.bytes().await {
                        Ok(body) => {
                            let answer = Answer {
                                status,
                                body: body.to_vec(),
                            };
                            tracing::debug!(
                                operation = what,
                                status,
                                retry = retries,
                                "Actions service answered"
                            );
                            if status == 501 {
                                return Ok(answer);
                            }
                            if retry_auth
                                && (status == 401 || status == 403)
                                && retries < AUTH_RETRIES
                            {
                                (
                                    retry::backoff(retries, time.jitter()),
                                    format!(
                                        "{status} (the registration token may not have reached the service yet)"
                                    ),
                                )
                            } else {
                                let attempt = Attempt::Status {
                                    status,
                                    rate: RateHeaders {
                                        retry_after,
                                        remaining: None,
                                        reset: None,
                                    },
                                    message: String::new(),
                                };
                                match retry::decide(&attempt, retries, time.now(), time.jitter()) {
                                    Decision::Answer => return Ok(answer),
                                    // GitHub's client obeys Retry-After on a 503 too.
                                    Decision::Retry { after, reason } => match retry_after {
                                        Some(s) if status == 503 => {
                                            (Duration::from_secs(s), reason)
                                        }
                                        _ => (after, reason),
                                    },
                                }
                            }
                        }
                        Err(e) => transport(e.is_timeout(), e.to_string()),
                    }
                }
                Err(e) => transport(e.is_timeout(), e.without_url().to_string()),
            };
            let elapsed = time.now().duration_since(start).unwrap_or_default();
            if elapsed + after > self.opts.deadline {
                return Err(ScalesetError::Unavailable {
                    what: what.into(),
                    attempts: retries + 1,
                    elapsed,
                    deadline: self.opts.deadline,
                    last: reason,
                });
            }
            retries += 1;
            tracing::warn!(
                operation = what,
                retry = retries,
                delay_ms = after.as_millis() as u64,
                "Actions service: {reason}; retry {retries} in {:.1}s",
                after.as_secs_f64()
            );
            time.sleep(after).await;
        }
    }

    async fn send(
        &self,
        what: &str,
        method: Method,
        target: Target<'_>,
        body: Option<String>,
    ) -> Result<Answer, ScalesetError> {
        let (url, bearer, timeout, capacity) = match target {
            Target::Service { path, bearer } => {
                let (service, admin) = self.admin().await?;
                let url = with_api_version(&format!("{}/{path}", service.trim_end_matches('/')));
                (
                    url,
                    bearer.cloned().unwrap_or(admin),
                    self.opts.request_timeout,
                    None,
                )
            }
            Target::Queue {
                url,
                token,
                max_capacity,
            } => (
                url.to_string(),
                token.clone(),
                if max_capacity.is_some() {
                    self.opts.poll_timeout
                } else {
                    self.opts.request_timeout
                },
                max_capacity,
            ),
        };
        self.retrying(what, false, || {
            let mut r = self
                .http
                .request(method.clone(), &url)
                .timeout(timeout)
                .bearer_auth(bearer.expose())
                .header("Content-Type", "application/json");
            if let Some(c) = capacity {
                r = r
                    .header("Accept", format!("application/json; {API_VERSION}"))
                    .header("X-ScaleSetMaxCapacity", c.to_string());
            }
            if let Some(b) = &body {
                r = r.body(b.clone());
            }
            r
        })
        .await
    }

    async fn json<T: DeserializeOwned>(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<String>,
        ok: u16,
    ) -> Result<T, ScalesetError> {
        let a = self
            .send(what, method, Target::Service { path, bearer: None }, body)
            .await?;
        if a.status != ok {
            return Err(Self::refused(what, &a));
        }
        serde_json::from_slice(a.text()).map_err(|e| Self::unexpected(what, e))
    }

    async fn no_content(
        &self,
        what: &str,
        method: Method,
        path: &str,
    ) -> Result<bool, ScalesetError> {
        let a = self
            .send(what, method, Target::Service { path, bearer: None }, None)
            .await?;
        match a.status {
            200 | 204 => Ok(true),
            404 => Ok(false),
            _ => Err(Self::refused(what, &a)),
        }
    }

    /// The runner group called `name`: `default` is id 1 without a lookup, as GitHub's own tools
    /// take it; any other must match exactly one group.
    pub async fn runner_group(&self, name: &str) -> Result<RunnerGroup, ScalesetError> {
        if name.eq_ignore_ascii_case("default") {
            return Ok(RunnerGroup {
                id: 1,
                name: "Default".into(),
                is_default_group: true,
            });
        }
        let what = "find the runner group";
        let path = format!("_apis/runtime/runnergroups/?groupName={}", encode(name));
        let list: List<RunnerGroup> = self.json(what, Method::GET, &path, None, 200).await?;
        match list.value.as_slice() {
            [g] => Ok(g.clone()),
            [] => Err(Self::unexpected(
                what,
                format!(
                    "no runner group named {name:?}; RUNNER_GROUP must name one of the scope's groups"
                ),
            )),
            many => Err(Self::unexpected(
                what,
                format!("{} runner groups named {name:?}", many.len()),
            )),
        }
    }

    /// The scale set called `name` in group `group_id`, if there is one.
    pub async fn scale_set_by_name(
        &self,
        group_id: u64,
        name: &str,
    ) -> Result<Option<ScaleSet>, ScalesetError> {
        let what = "find the scale set";
        let path = format!(
            "{SCALE_SETS}?runnerGroupId={group_id}&name={}",
            encode(name)
        );
        let list: List<ScaleSet> = self.json(what, Method::GET, &path, None, 200).await?;
        match list.value.len() {
            0 => Ok(None),
            1 => Ok(list.value.into_iter().next()),
            n => Err(Self::unexpected(
                what,
                format!("{n} scale sets named {name:?}"),
            )),
        }
    }

    pub async fn scale_set(&self, id: u64) -> Result<ScaleSet, ScalesetError> {
        self.json(
            "read the scale set",
            Method::GET,
            &format!("{SCALE_SETS}/{id}"),
            None,
            200,
        )
        .await
    }

    /// Creates a scale set (labels filled in as the service requires); 200 with its id.
    pub async fn create_scale_set(&self, s: ScaleSet) -> Result<ScaleSet, ScalesetError> {
        let body = serde_json::to_string(&ensure_labels(s)).expect("serialises");
        let made: ScaleSet = self
            .json(
                "create the scale set",
                Method::POST,
                SCALE_SETS,
                Some(body),
                200,
            )
            .await?;
        if made.id == 0 {
            return Err(Self::unexpected(
                "create the scale set",
                "no id in the answer",
            ));
        }
        Ok(made)
    }

    /// Changes what `s` gives (a partial scale set).
    pub async fn update_scale_set(&self, id: u64, s: ScaleSet) -> Result<ScaleSet, ScalesetError> {
        let mut s = s;
        for l in &mut s.labels {
            if l.kind.is_empty() {
                l.kind = "System".into();
            }
        }
        let body = serde_json::to_string(&s).expect("serialises");
        self.json(
            "update the scale set",
            Method::PATCH,
            &format!("{SCALE_SETS}/{id}"),
            Some(body),
            200,
        )
        .await
    }

    /// Deletes a scale set; one that is gone already counts as deleted.
    pub async fn delete_scale_set(&self, id: u64) -> Result<(), ScalesetError> {
        self.no_content(
            "delete the scale set",
            Method::DELETE,
            &format!("{SCALE_SETS}/{id}"),
        )
        .await
        .map(|_| ())
    }

    /// A JIT configuration for a runner called `name` in scale set `id`. A taken name
    /// (`AgentExistsException`: a leftover, or an earlier attempt whose answer was lost) is
    /// recovered as actions-runner-controller does: the runner of that name is removed if it
    /// belongs to this scale set, and the call made once more; one of another scale set, or a
    /// busy one, is the caller's error.
    pub async fn jit_config(&self, id: u64, name: &str) -> Result<ScaleSetJit, ScalesetError> {
        match self.jit_config_once(id, name).await {
            Err(e) if e.type_name() == Some("AgentExistsException") => {
                let Some(old) = self.runner_by_name(name).await? else {
                    return self.jit_config_once(id, name).await;
                };
                if old.runner_scale_set_id != id {
                    return Err(e);
                }
                tracing::info!(
                    runner_id = old.id,
                    "a runner named {name} exists in scale set {id} already: removing it and asking again"
                );
                self.remove_runner(old.id).await?;
                self.jit_config_once(id, name).await
            }
            r => r,
        }
    }

    async fn jit_config_once(&self, id: u64, name: &str) -> Result<ScaleSetJit, ScalesetError> {
        let body = serde_json::to_string(&JitRequest {
            name,
            work_folder: "",
        })
        .expect("serialises");
        let a: JitAnswer = self
            .json(
                "generate a JIT config",
                Method::POST,
                &format!("{SCALE_SETS}/{id}/generatejitconfig"),
                Some(body),
                200,
            )
            .await?;
        Ok(ScaleSetJit {
            runner: a.runner,
            encoded: Secret::new(a.encoded_jit_config),
        })
    }

    /// Runner `id`, if it exists.
    pub async fn runner(&self, id: u64) -> Result<Option<RunnerRef>, ScalesetError> {
        let what = "read a runner";
        let a = self
            .send(
                what,
                Method::GET,
                Target::Service {
                    path: &format!("{AGENTS}/{id}"),
                    bearer: None,
                },
                None,
            )
            .await?;
        match a.status {
            200 => serde_json::from_slice(a.text())
                .map(Some)
                .map_err(|e| Self::unexpected(what, e)),
            404 => Ok(None),
            _ => Err(Self::refused(what, &a)),
        }
    }

    /// The runner called `name`, if there is one.
    pub async fn runner_by_name(&self, name: &str) -> Result<Option<RunnerRef>, ScalesetError> {
        let what = "find a runner by name";
        let path = format!("{AGENTS}?agentName={}", encode(name));
        let list: List<RunnerRef> = self.json(what, Method::GET, &path, None, 200).await?;
        match list.value.len() {
            0 => Ok(None),
            1 => Ok(list.value.into_iter().next()),
            n => Err(Self::unexpected(
                what,
                format!("{n} runners named {name:?}"),
            )),
        }
    }

    /// Removes runner `id`: true when it was there. A busy one is a [`ScalesetError::Refused`]
    /// of type `JobStillRunningException`.
    pub async fn remove_runner(&self, id: u64) -> Result<bool, ScalesetError> {
        self.no_content("remove a runner", Method::DELETE, &format!("{AGENTS}/{id}"))
            .await
    }

    /// Opens a message session; 409 (`RunnerScaleSetSessionConflictException`) while another
    /// is live.
    pub async fn create_session(
        &self,
        scale_set: u64,
        owner: &str,
    ) -> Result<SessionAnswer, ScalesetError> {
        let body = serde_json::to_string(&SessionRequest {
            session_id: "00000000-0000-0000-0000-000000000000",
            owner_name: owner,
        })
        .expect("serialises");
        self.json(
            "create a message session",
            Method::POST,
            &format!("{SCALE_SETS}/{scale_set}/sessions"),
            Some(body),
            200,
        )
        .await
    }

    /// Refreshes a session: the answer is the whole session, with a new queue token.
    pub async fn refresh_session(
        &self,
        scale_set: u64,
        session: &str,
    ) -> Result<SessionAnswer, ScalesetError> {
        self.json(
            "refresh the message session",
            Method::PATCH,
            &format!("{SCALE_SETS}/{scale_set}/sessions/{session}"),
            None,
            200,
        )
        .await
    }

    /// Deletes a session. Gone already (404) or expired (400 `RunnerScaleSetSessionExpiredException`)
    /// counts as done: false then.
    pub async fn delete_session(
        &self,
        scale_set: u64,
        session: &str,
    ) -> Result<bool, ScalesetError> {
        let what = "delete the message session";
        let a = self
            .send(
                what,
                Method::DELETE,
                Target::Service {
                    path: &format!("{SCALE_SETS}/{scale_set}/sessions/{session}"),
                    bearer: None,
                },
                None,
            )
            .await?;
        match a.status {
            200 | 204 => Ok(true),
            404 => Ok(false),
            400 if a
                .error()
                .type_name
                .is_some_and(|t| t.contains("SessionExpired")) =>
            {
                Ok(false)
            }
            _ => Err(Self::refused(what, &a)),
        }
    }

    /// One long poll of the queue: a message, or `None` on 202 (none within the poll).
    pub async fn get_message(
        &self,
        queue_url: &str,
        token: &Secret,
        last_message_id: i64,
        max_capacity: u32,
    ) -> Result<QueueAnswer<Option<QueueMessage>>, ScalesetError> {
        let what = "poll the message queue";
        let url = if last_message_id > 0 {
            let sep = if queue_url.contains('?') { '&' } else { '?' };
            format!("{queue_url}{sep}lastMessageId={last_message_id}")
        } else {
            queue_url.to_string()
        };
        let a = self
            .send(
                what,
                Method::GET,
                Target::Queue {
                    url: &url,
                    token,
                    max_capacity: Some(max_capacity),
                },
                None,
            )
            .await?;
        match a.status {
            202 => Ok(QueueAnswer::Ok(None)),
            401 => Ok(QueueAnswer::TokenExpired),
            200 => {
                let m: QueueMessage =
                    serde_json::from_slice(a.text()).map_err(|e| Self::unexpected(what, e))?;
                if m.message_type != "RunnerScaleSetJobMessages" {
                    return Err(Self::unexpected(
                        what,
                        format!("a message of type {:?}", m.message_type),
                    ));
                }
                Ok(QueueAnswer::Ok(Some(m)))
            }
            _ => Err(Self::refused(what, &a)),
        }
    }

    /// Acknowledges a message (unacknowledged ones come again).
    pub async fn delete_message(
        &self,
        queue_url: &str,
        token: &Secret,
        message_id: i64,
    ) -> Result<QueueAnswer<()>, ScalesetError> {
        let what = "delete a message";
        let url = match queue_url.split_once('?') {
            Some((path, query)) => format!("{}/{message_id}?{query}", path.trim_end_matches('/')),
            None => format!("{}/{message_id}", queue_url.trim_end_matches('/')),
        };
        let a = self
            .send(
                what,
                Method::DELETE,
                Target::Queue {
                    url: &url,
                    token,
                    max_capacity: None,
                },
                None,
            )
            .await?;
        match a.status {
            200 | 204 => Ok(QueueAnswer::Ok(())),
            401 => Ok(QueueAnswer::TokenExpired),
            _ => Err(Self::refused(what, &a)),
        }
    }

    /// Acquires jobs (by `runnerRequestId`) for the scale set, with the queue's token: the ids
    /// acquired.
    pub async fn acquire_jobs(
        &self,
        scale_set: u64,
        token: &Secret,
        request_ids: &[i64],
    ) -> Result<QueueAnswer<Vec<i64>>, ScalesetError> {
        let what = "acquire jobs";
        let a = self
            .send(
                what,
                Method::POST,
                Target::Service {
                    path: &format!("{SCALE_SETS}/{scale_set}/acquirejobs"),
                    bearer: Some(token),
                },
                Some(serde_json::to_string(request_ids).expect("serialises")),
            )
            .await?;
        match a.status {
            200 => {
                let list: List<i64> =
                    serde_json::from_slice(a.text()).map_err(|e| Self::unexpected(what, e))?;
                Ok(QueueAnswer::Ok(list.value))
            }
            401 => Ok(QueueAnswer::TokenExpired),
            _ => Err(Self::refused(what, &a)),
        }
    }
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: serde_json::Value) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.sig",
            b64(br#"{"alg":"RS256","typ":"JWT"}"#),
            b64(payload.to_string().as_bytes())
        )
    }

    #[test]
    fn the_admin_tokens_expiry_is_read_unverified_and_renewed_a_minute_early() {
        let t = jwt(serde_json::json!({"exp": 1_800_000_000u64, "iss": "x"}));
        let exp = jwt_exp(&t).unwrap();
        assert_eq!(exp, UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        assert!(!needs_renewal(Some(exp), exp - Duration::from_secs(61)));
        assert!(needs_renewal(Some(exp), exp - Duration::from_secs(60)));
        assert!(needs_renewal(Some(exp), exp + Duration::from_secs(1)));
        assert!(needs_renewal(None, UNIX_EPOCH));
        assert_eq!(jwt_exp("not-a-jwt"), None);
        assert_eq!(jwt_exp(&jwt(serde_json::json!({"iss": "no exp"}))), None);
    }

    #[test]
    fn every_service_request_carries_the_api_version() {
        assert_eq!(
            with_api_version("https://pipelines.example/t/_apis/runtime/runnerscalesets/1"),
            "https://pipelines.example/t/_apis/runtime/runnerscalesets/1?api-version=6.0-preview"
        );
        assert_eq!(
            with_api_version("https://p/t/_apis/runtime/runnerscalesets?runnerGroupId=1&name=a"),
            "https://p/t/_apis/runtime/runnerscalesets?runnerGroupId=1&name=a&api-version=6.0-preview"
        );
    }

    #[test]
    fn a_new_scale_set_gets_its_name_as_label_and_labels_get_a_type() {
        let s = ensure_labels(ScaleSet {
            name: "ci".into(),
            ..ScaleSet::default()
        });
        assert_eq!(
            s.labels,
            vec![ScaleSetLabel {
                kind: "System".into(),
                name: "ci".into()
            }]
        );
        let s = ensure_labels(ScaleSet {
            name: "ci".into(),
            labels: vec![ScaleSetLabel {
                kind: String::new(),
                name: "gpu".into(),
            }],
            ..ScaleSet::default()
        });
        assert_eq!(s.labels[0].kind, "System");
        assert_eq!(s.labels.len(), 1);
    }
}
