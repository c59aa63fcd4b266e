//! The client itself: one `send` that authenticates, retries and classifies; operations on top.
//! What to retry and how long to wait is `retry`'s; when to call is the caller's.

use super::ApiError;
use super::retry::{self, Attempt, Decision, RateHeaders, Time};
use super::types::*;
use crate::config::{Auth, Scope};
use crate::secret::Secret;
use reqwest::Method;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

pub struct ClientOptions {
    /// Per request (API_TIMEOUT).
    pub request_timeout: Duration,
    /// Per operation with its retries (API_DEADLINE).
    pub deadline: Duration,
    pub time: Arc<dyn Time>,
}

pub struct Client {
    http: reqwest::Client,
    api: String,
    scope: Scope,
    auth: Auth,
    opts: ClientOptions,
    installation: Mutex<Option<u64>>,
    app_token: Mutex<Option<CachedToken>>,
}

struct CachedToken {
    token: Secret,
    /// Renew at or after this time.
    renew_at: SystemTime,
}

/// A just-in-time runner configuration.
#[derive(Debug, Clone)]
pub struct JitConfig {
    pub runner_id: u64,
    pub runner_name: String,
    pub encoded: Secret,
}

#[derive(Debug, Clone)]
pub struct RegistrationToken {
    pub token: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Deleted,
    /// Not there (any more): an ephemeral runner GitHub removed after its job, or never created.
    NotFound,
    /// 422: it is running a job right now.
    Busy,
}

enum Bearer {
    /// The PAT, or the App's installation token.
    Scope,
    /// A fresh App JWT (for `/app…` and `…/installation`).
    AppJwt,
}

struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn message(&self) -> String {
        serde_json::from_slice::<ErrorBody>(&self.body)
            .map(|b| b.message)
            .unwrap_or_else(|_| {
                String::from_utf8_lossy(&self.body)
                    .chars()
                    .take(200)
                    .collect()
            })
    }
}

/// `self-hosted`, `Linux` and the architecture label, as the runner itself adds them.
pub fn default_labels() -> Vec<String> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "X64",
        "aarch64" => "ARM64",
        "arm" => "ARM",
        other => other,
    };
    vec!["self-hosted".into(), "Linux".into(), arch.into()]
}

impl Client {
    pub fn new(
        api: &str,
        scope: Scope,
        auth: Auth,
        opts: ClientOptions,
    ) -> Result<Client, ApiError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("sysrunner/", env!("CARGO_PKG_VERSION")))
            .timeout(opts.request_timeout)
            .build()
            .map_err(|e| ApiError::Unexpected {
                what: "HTTP client setup".into(),
                detail: e.to_string(),
            })?;
        let installation = match &auth {
            Auth::App { installation, .. } => *installation,
            Auth::Token(_) => None,
        };
        Ok(Client {
            http,
            api: api.trim_end_matches('/').to_string(),
            scope,
            auth,
            opts,
            installation: Mutex::new(installation),
            app_token: Mutex::new(None),
        })
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// What the credentials need for this scope, said with every refusal.
    fn permission_hint(&self) -> String {
        let app = matches!(self.auth, Auth::App { .. });
        match (&self.scope, app) {
            (Scope::Repo { .. }, false) => "The token needs the `repo` scope (classic PAT) or Administration: write on the repository (fine-grained PAT).".into(),
            (Scope::Repo { .. }, true) => "The App needs the Administration: write permission and an installation on the repository.".into(),
            (Scope::Org(_), false) => "The token needs the `admin:org` scope (classic PAT) or Self-hosted runners: write on the organization (fine-grained PAT).".into(),
            (Scope::Org(_), true) => "The App needs the organization permission Self-hosted runners: write and an installation on the organization.".into(),
            (Scope::Enterprise(_), _) => "The token needs the `manage_runners:enterprise` scope (classic PAT).".into(),
        }
    }

    fn refused(&self, what: &str, a: &Answer) -> ApiError {
        let hint = match a.status {
            401 => "Check ACCESS_TOKEN (or the App's id and key): it is wrong, expired or revoked."
                .to_string(),
            404 => format!(
                "{} does not exist, or the credentials cannot see it. {}",
                self.scope,
                self.permission_hint()
            ),
            _ => self.permission_hint(),
        };
        ApiError::Refused {
            what: what.into(),
            status: a.status,
            message: a.message(),
            hint,
        }
    }

    fn unexpected(what: &str, detail: impl ToString) -> ApiError {
        ApiError::Unexpected {
            what: what.into(),
            detail: detail.to_string(),
        }
    }

    /// One operation: authenticate, send, retry by GitHub's rules until `deadline`, and return
    /// the first answer that is not worth retrying.
    async fn send(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        bearer: Bearer,
    ) -> Result<Answer, ApiError> {
        let time = &self.opts.time;
        let start = time.now();
        let mut retries = 0u32;
        let mut renewed = false;
        loop {
            let token = match bearer {
                Bearer::Scope => self.scope_token().await?,
                Bearer::AppJwt => self.app_jwt()?,
            };
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.api))
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28")
                .bearer_auth(token.expose());
            if let Some(b) = body {
                req = req.json(b);
            }
            let attempt = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let header = |n: &str| {
                        resp.headers()
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok())
                    };
                    let rate = RateHeaders {
                        retry_after: header("retry-after"),
                        remaining: header("x-ratelimit-remaining"),
                        reset: header("x-ratelimit-reset"),
                    };
                    match resp.bytes().await {
                        Ok(body) => {
                            let answer = Answer {
                                status,
                                body: body.to_vec(),
                            };
                            let attempt = Attempt::Status {
                                status,
                                rate,
                                message: answer.message(),
                            };
                            match retry::decide(&attempt, retries, time.now(), time.jitter()) {
                                Decision::Answer => {
                                    // An installation token can be revoked or expire early: get a
                                    // new one once before calling the credentials bad.
                                    if status == 401
                                        && !renewed
                                        && matches!(
                                            (&bearer, &self.auth),
                                            (Bearer::Scope, Auth::App { .. })
                                        )
                                    {
                                        renewed = true;
                                        *self.app_token.lock().await = None;
                                        continue;
                                    }
                                    return Ok(answer);
                                }
                                Decision::Retry { after, reason } => Some((after, reason)),
                            }
                        }
                        Err(e) => {
                            let a = Attempt::Transport {
                                timed_out: e.is_timeout(),
                                detail: e.to_string(),
                            };
                            match retry::decide(&a, retries, time.now(), time.jitter()) {
                                Decision::Retry { after, reason } => Some((after, reason)),
                                Decision::Answer => None,
                            }
                        }
                    }
                }
                Err(e) => {
                    let a = Attempt::Transport {
                        timed_out: e.is_timeout(),
                        detail: without_url(&e),
                    };
                    match retry::decide(&a, retries, time.now(), time.jitter()) {
                        Decision::Retry { after, reason } => Some((after, reason)),
                        Decision::Answer => None,
                    }
                }
            };
            let Some((after, reason)) = attempt else {
                return Err(Self::unexpected(what, "no answer"));
            };
            let elapsed = time.now().duration_since(start).unwrap_or_default();
            if elapsed + after > self.opts.deadline {
                return Err(ApiError::Unavailable {
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
                "GitHub: {reason}; retry {retries} in {:.1}s",
                after.as_secs_f64()
            );
            time.sleep(after).await;
        }
    }

    async fn send_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        ok: u16,
    ) -> Result<T, ApiError> {
        let a = self.send(what, method, path, body, Bearer::Scope).await?;
        if a.status != ok {
            return Err(self.refused(what, &a));
        }
        serde_json::from_slice(&a.body).map_err(|e| Self::unexpected(what, e))
    }

    fn app_jwt(&self) -> Result<Secret, ApiError> {
        let Auth::App { id, key, .. } = &self.auth else {
            return Err(Self::unexpected("App JWT", "no GitHub App configured"));
        };
        let now = self
            .opts
            .time
            .now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // iat in the past and exp under 10 minutes tolerate clock drift both ways; exactly
        // 10 minutes is refused when clocks drift.
        let iss = match id.parse::<u64>() {
            Ok(n) => json!(n),
            Err(_) => json!(id),
        };
        let claims = json!({"iat": now - 60, "exp": now + 9 * 60, "iss": iss});
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(key.expose().as_bytes())
            .map_err(|e| Self::unexpected("App JWT", e))?;
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &key,
        )
        .map(Secret::new)
        .map_err(|e| Self::unexpected("App JWT", e))
    }

    async fn scope_token(&self) -> Result<Secret, ApiError> {
        match &self.auth {
            Auth::Token(t) => Ok(t.clone()),
            Auth::App { .. } => Box::pin(self.installation_token()).await,
        }
    }

    /// The installation token, from the cache unless it is close to `expires_at`.
    async fn installation_token(&self) -> Result<Secret, ApiError> {
        let mut cache = self.app_token.lock().await;
        let now = self.opts.time.now();
        if let Some(c) = cache.as_ref()
            && now < c.renew_at
        {
            return Ok(c.token.clone());
        }
        let id = self.installation_id().await?;
        let what = "create an installation access token";
        let a = self
            .send(
                what,
                Method::POST,
                &format!("/app/installations/{id}/access_tokens"),
                None,
                Bearer::AppJwt,
            )
            .await?;
        if a.status != 201 {
            return Err(self.refused(what, &a));
        }
        let t: TokenAnswer =
            serde_json::from_slice(&a.body).map_err(|e| Self::unexpected(what, e))?;
        let expires = parse_time(&t.expires_at).map_err(|e| Self::unexpected(what, e))?;
        let lifetime = expires.duration_since(now).unwrap_or_default();
        // Renew a minute early, or halfway for short-lived tokens.
        let margin = Duration::from_secs(60).min(lifetime / 2);
        let token = Secret::new(t.token);
        *cache = Some(CachedToken {
            token: token.clone(),
            renew_at: expires - margin,
        });
        tracing::debug!("installation token valid until {}", t.expires_at);
        Ok(token)
    }

    async fn installation_id(&self) -> Result<u64, ApiError> {
        let mut known = self.installation.lock().await;
        if let Some(id) = *known {
            return Ok(id);
        }
        let what = "find the App's installation";
        let path = match &self.scope {
            Scope::Repo { owner, repo } => format!("/repos/{owner}/{repo}/installation"),
            Scope::Org(o) => format!("/orgs/{o}/installation"),
            Scope::Enterprise(e) => format!("/enterprises/{e}/installation"),
        };
        let a = self
            .send(what, Method::GET, &path, None, Bearer::AppJwt)
            .await?;
        if a.status != 200 {
            let mut err = self.refused(what, &a);
            if let ApiError::Refused { hint, .. } = &mut err
                && a.status == 404
            {
                *hint = format!(
                    "The App is not installed on {}: install it there, or set APP_INSTALLATION_ID.",
                    self.scope
                );
            }
            return Err(err);
        }
        let i: InstallationAnswer =
            serde_json::from_slice(&a.body).map_err(|e| Self::unexpected(what, e))?;
        *known = Some(i.id);
        Ok(i.id)
    }

    /// The runner group's id: 1 (Default) for repositories, looked up by name otherwise.
    pub async fn runner_group_id(&self, name: &str) -> Result<u64, ApiError> {
        if matches!(self.scope, Scope::Repo { .. }) {
            return Ok(1);
        }
        let what = "list runner groups";
        let mut page = 1;
        let mut seen = Vec::new();
        loop {
            let path = format!(
                "{}/actions/runner-groups?per_page=100&page={page}",
                self.scope.api_path()
            );
            let groups: RunnerGroups = self.send_json(what, Method::GET, &path, None, 200).await?;
            let n = groups.runner_groups.len();
            for g in groups.runner_groups {
                if g.name.eq_ignore_ascii_case(name) {
                    return Ok(g.id);
                }
                seen.push(g.name);
            }
            if n < 100 {
                break;
            }
            page += 1;
        }
        Err(ApiError::Refused {
            what: what.into(),
            status: 404,
            message: format!("no runner group named {name:?}"),
            hint: format!(
                "RUNNER_GROUP must name a group of {}; it has: {}",
                self.scope,
                seen.join(", ")
            ),
        })
    }

    /// Registers a just-in-time runner. On 409 (the name is taken: a leftover, or an earlier attempt
    /// that timed out but succeeded) the runner of that name is deleted if it is offline or is the one
    /// this container recorded (`known_id`), and the call is made once more; a live one is a duplicate.
    pub async fn jit_config(
        &self,
        name: &str,
        group: &str,
        labels: &[String],
        work_folder: &str,
        known_id: Option<u64>,
    ) -> Result<JitConfig, ApiError> {
        let group_id = self.runner_group_id(group).await?;
        let what = "generate a JIT runner config";
        let path = format!(
            "{}/actions/runners/generate-jitconfig",
            self.scope.api_path()
        );
        let mut asked = name.to_string();
        for attempt in 0..3 {
            let body = json!({
                "name": asked,
                "runner_group_id": group_id,
                "labels": labels,
                "work_folder": work_folder,
            });
            let a = self
                .send(what, Method::POST, &path, Some(&body), Bearer::Scope)
                .await?;
            match a.status {
                201 => {
                    let j: JitConfigAnswer =
                        serde_json::from_slice(&a.body).map_err(|e| Self::unexpected(what, e))?;
                    return Ok(JitConfig {
                        runner_id: j.runner.id,
                        runner_name: j.runner.name,
                        encoded: Secret::new(j.encoded_jit_config),
                    });
                }
                409 if attempt < 2 => {
                    let existing = self.runners_named(&asked).await?;
                    for r in existing {
                        if r.online() && Some(r.id) != known_id {
                            return Err(ApiError::Duplicate {
                                name: asked,
                                id: r.id,
                            });
                        }
                        tracing::info!(
                            runner_id = r.id,
                            "a runner named {asked} is left over ({}): deleting it",
                            if r.online() {
                                "recorded by this container"
                            } else {
                                "offline"
                            }
                        );
                        if self.delete_runner(r.id).await? == Deleted::Busy {
                            if Some(r.id) != known_id {
                                return Err(ApiError::Duplicate {
                                    name: asked,
                                    id: r.id,
                                });
                            }
                            // This container's own runner, cut off during its job (the container
                            // was killed): GitHub keeps it busy until that job times out. This
                            // life registers under a name of its own meanwhile; the old runner
                            // goes offline then, for `sysrunner prune`.
                            let other = alternate_name(name, rand::random());
                            tracing::warn!(
                                runner_id = r.id,
                                "the runner {asked} this container left is still busy at GitHub (its job was cut off): registering as {other} instead"
                            );
                            asked = other;
                        }
                    }
                }
                _ => return Err(self.refused(what, &a)),
            }
        }
        Err(ApiError::Refused {
            what: what.into(),
            status: 409,
            message: format!(
                "the name {asked} is still taken after deleting the runner that had it"
            ),
            hint: "Another container may be registering under the same RUNNER_NAME.".into(),
        })
    }

    pub async fn registration_token(&self) -> Result<RegistrationToken, ApiError> {
        let path = format!(
            "{}/actions/runners/registration-token",
            self.scope.api_path()
        );
        let t: TokenAnswer = self
            .send_json(
                "create a registration token",
                Method::POST,
                &path,
                None,
                201,
            )
            .await?;
        Ok(RegistrationToken {
            token: Secret::new(t.token),
        })
    }

    pub async fn remove_token(&self) -> Result<RegistrationToken, ApiError> {
        let path = format!("{}/actions/runners/remove-token", self.scope.api_path());
        let t: TokenAnswer = self
            .send_json("create a remove token", Method::POST, &path, None, 201)
            .await?;
        Ok(RegistrationToken {
            token: Secret::new(t.token),
        })
    }

    /// Every runner of the scope (all pages), or those with exactly this name.
    pub async fn list_runners(&self, name: Option<&str>) -> Result<Vec<Runner>, ApiError> {
        let what = "list runners";
        let mut out = Vec::new();
        let mut page = 1;
        loop {
            let mut path = format!(
                "{}/actions/runners?per_page=100&page={page}",
                self.scope.api_path()
            );
            if let Some(n) = name {
                path.push_str(&format!("&name={}", url_encode(n)));
            }
            let list: RunnerList = self.send_json(what, Method::GET, &path, None, 200).await?;
            let n = list.runners.len();
            out.extend(list.runners);
            if n < 100 {
                return Ok(out);
            }
            page += 1;
        }
    }

    async fn runners_named(&self, name: &str) -> Result<Vec<Runner>, ApiError> {
        Ok(self
            .list_runners(Some(name))
            .await?
            .into_iter()
            .filter(|r| r.name == name)
            .collect())
    }

    pub async fn get_runner(&self, id: u64) -> Result<Option<Runner>, ApiError> {
        let what = "get a runner";
        let path = format!("{}/actions/runners/{id}", self.scope.api_path());
        let a = self
            .send(what, Method::GET, &path, None, Bearer::Scope)
            .await?;
        match a.status {
            200 => serde_json::from_slice(&a.body)
                .map(Some)
                .map_err(|e| Self::unexpected(what, e)),
            404 => Ok(None),
            _ => Err(self.refused(what, &a)),
        }
    }

    /// The runner releases GitHub offers for the scope (`actions/runners/downloads`): one per OS
    /// and architecture.
    pub async fn runner_downloads(&self) -> Result<Vec<RunnerDownload>, ApiError> {
        let path = format!("{}/actions/runners/downloads", self.scope.api_path());
        self.send_json("list runner downloads", Method::GET, &path, None, 200)
            .await
    }

    pub async fn delete_runner(&self, id: u64) -> Result<Deleted, ApiError> {
        let what = "delete a runner";
        let path = format!("{}/actions/runners/{id}", self.scope.api_path());
        let a = self
            .send(what, Method::DELETE, &path, None, Bearer::Scope)
            .await?;
        match a.status {
            204 => Ok(Deleted::Deleted),
            404 => Ok(Deleted::NotFound),
            422 => Ok(Deleted::Busy),
            _ => Err(self.refused(what, &a)),
        }
    }
}

/// A name for a life whose usual one is held by this container's own busy leftover: the usual
/// name, shortened to fit, a dash and 4 hex digits (still RUNNER_NAME_PREFIX-…, for `prune`).
pub fn alternate_name(name: &str, random: u16) -> String {
    let keep = name.len().min(crate::config::MAX_RUNNER_NAME - 5);
    format!("{}-{random:04x}", &name[..keep])
}

fn parse_time(s: &str) -> Result<SystemTime, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("expires_at {s:?}: {e}"))?;
    Ok(UNIX_EPOCH + Duration::from_secs(t.unix_timestamp().max(0) as u64))
}

/// reqwest's errors name the URL, which is fine, but never a token: they carry none.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alternate_name_keeps_the_prefix_and_fits() {
        assert_eq!(alternate_name("sysrunner-abc", 0x2a), "sysrunner-abc-002a");
        let long = "x".repeat(64);
        let n = alternate_name(&long, 0xffff);
        assert_eq!(n.len(), 64);
        assert!(n.ends_with("-ffff"));
    }
}
