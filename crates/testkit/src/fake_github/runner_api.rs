//! The runner's side (`/_fake/runner/…`), which GitHub never exposes: the identity files a runner
//! gets (from a JIT config or the config exchange), its session, the job long-poll, busy/idle, the
//! job's result, and `remove`. The protocol is written down in `README.md` beside this file.

use super::server::{Reply, Req, Shared};
use super::state::{HEX, Runner, RunnerTokenKind, State, random_text};
use super::wire::{
    ConfigRequest, JobCompletion, JobMessage, JobStatus, RemoveRequest, SessionRequest,
    SessionResponse,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use std::time::Duration;

/// The three files actions/runner keeps in its root: `.runner`, `.credentials`, `.credentials_rsaparams`.
pub(crate) struct Identity {
    pub runner: Value,
    pub credentials: Value,
    pub rsaparams: Value,
}

impl Identity {
    /// `encoded_jit_config`: base64 of `{".runner": b64, ".credentials": b64, ".credentials_rsaparams": b64}`,
    /// each inner value the base64 of that file's JSON text.
    pub(crate) fn encode(&self) -> String {
        let inner = json!({
            ".runner": B64.encode(self.runner.to_string()),
            ".credentials": B64.encode(self.credentials.to_string()),
            ".credentials_rsaparams": B64.encode(self.rsaparams.to_string()),
        });
        B64.encode(inner.to_string())
    }

    /// The config exchange's answer: the same files as JSON values, keyed by file name.
    pub(crate) fn files(&self) -> Value {
        json!({
            ".runner": self.runner,
            ".credentials": self.credentials,
            ".credentials_rsaparams": self.rsaparams,
        })
    }
}

/// The identity of a runner. `.credentials` has actions/runner's shape (OAuth, `clientId`,
/// `authorizationUrl`); `.credentials_rsaparams` holds, instead of an RSA key, the runner's
/// bearer secret for this protocol (`fakeRunnerSecret`), so a fake runner needs no crypto.
pub(crate) fn identity(st: &State, r: &Runner, web: &str) -> Identity {
    let pool_name = if r.scope.has_groups() {
        st.group(&r.scope, r.group_id)
            .map_or("Default".to_string(), |g| g.name.clone())
    } else {
        "Default".to_string()
    };
    Identity {
        runner: json!({
            "agentId": r.id,
            "agentName": r.name,
            "poolId": r.group_id,
            "poolName": pool_name,
            "serverUrl": web,
            "gitHubUrl": format!("{web}{}", r.scope.web_path()),
            "workFolder": r.work_folder,
            "ephemeral": r.ephemeral,
            "disableUpdate": false,
        }),
        credentials: json!({
            "scheme": "OAuth",
            "data": {
                "clientId": r.client_id,
                "authorizationUrl": format!("{web}/_fake/runner/oauth2/token"),
                "requireFipsCryptography": "False",
            },
        }),
        rsaparams: json!({ "fakeRunnerSecret": r.secret }),
    }
}

pub(crate) async fn handle(shared: &Shared, req: &Req) -> Reply {
    let sub = req.path.trim_start_matches("/_fake/runner/");
    let segs: Vec<&str> = sub.split('/').collect();
    match (req.method.as_str(), segs.as_slice()) {
        ("POST", ["config"]) => config(shared, req),
        ("POST", ["remove"]) => remove(shared, req),
        ("POST", ["session"]) => open_session(shared, req),
        ("DELETE", ["session"]) => close_session(shared, req),
        ("GET", ["jobs", "next"]) => next_job(shared, req).await,
        ("POST", ["jobs", id, "start"]) => match id.parse() {
            Ok(id) => start_job(shared, req, id),
            Err(_) => Reply::not_found(),
        },
        ("POST", ["jobs", id, "complete"]) => match id.parse() {
            Ok(id) => complete_job(shared, req, id),
            Err(_) => Reply::not_found(),
        },
        ("POST", ["jobs", id, "renew"]) => match id.parse() {
            Ok(id) => renew_job(shared, req, id),
            Err(_) => Reply::not_found(),
        },
        _ => Reply::not_found(),
    }
}

/// The runner a request's `Authorization: Bearer <fakeRunnerSecret>` names.
fn authenticate(st: &State, req: &Req) -> Result<u64, Reply> {
    super::auth::bearer(req.header("authorization"))
        .and_then(|secret| st.runner_by_secret(secret))
        .map(|r| r.id)
        .ok_or_else(|| {
            Reply::error(
                401,
                "Unknown runner credential: the runner does not exist (it may have been deleted)",
            )
        })
}

fn parse_body<T: serde::de::DeserializeOwned>(req: &Req) -> Result<T, Reply> {
    serde_json::from_slice(&req.body)
        .map_err(|e| Reply::error(400, format!("Problems parsing JSON: {e}")))
}

fn config(shared: &Shared, req: &Req) -> Reply {
    let body: ConfigRequest = match parse_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut st = shared.lock();
    let web = &shared.web_url;
    let Some(scope) = body
        .url
        .trim_end_matches('/')
        .strip_prefix(web.as_str())
        .and_then(|p| st.scope_from_web_path(p))
    else {
        return Reply::error(
            404,
            format!(
                "No repository, organization or enterprise at {} (expected {web}/OWNER/REPO, {web}/ORG or {web}/enterprises/ENT)",
                body.url
            ),
        );
    };
    match st.runner_token(&body.token, RunnerTokenKind::Registration) {
        None => return Reply::error(401, "Invalid or expired registration token"),
        Some(t) if t.scope != scope => {
            return Reply::error(
                403,
                format!("The registration token is for {}, not {scope}", t.scope),
            );
        }
        Some(_) => {}
    }
    let name = body.name.trim();
    if name.is_empty() {
        return Reply::error(422, "A runner name is required");
    }
    let group = match body.runner_group.as_deref() {
        None => 1,
        Some(g) if g.eq_ignore_ascii_case("default") => 1,
        Some(g) => match st
            .groups_of(&scope)
            .iter()
            .find(|x| x.name.eq_ignore_ascii_case(g))
        {
            Some(x) => x.id,
            None => return Reply::error(404, format!("Runner group {g} not found in {scope}")),
        },
    };
    if let Some(old) = st.runner_by_name(&scope, name) {
        if !body.replace {
            return Reply::error(409, format!("A runner exists with the same name {name}"));
        }
        if old.busy {
            return Reply::error(422, format!("Runner \"{name}\" is still running a job"));
        }
        let old_id = old.id;
        st.delete_runner(old_id);
    }
    let mut labels: Vec<String> = if body.no_default_labels {
        vec![]
    } else {
        vec!["self-hosted".into(), "Linux".into(), "X64".into()]
    };
    for l in body.labels {
        if !labels.iter().any(|x| x.eq_ignore_ascii_case(&l)) {
            labels.push(l);
        }
    }
    let work = body.work_folder.unwrap_or_else(|| "_work".into());
    let id = st.create_runner(scope, name, group, labels, body.ephemeral, false, &work);
    Reply::json(201, identity(&st, &st.runners[&id], web).files())
}

fn remove(shared: &Shared, req: &Req) -> Reply {
    let body: RemoveRequest = match parse_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut st = shared.lock();
    let id = match authenticate(&st, req) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let r = &st.runners[&id];
    match st.runner_token(&body.token, RunnerTokenKind::Remove) {
        None => return Reply::error(401, "Invalid or expired remove token"),
        Some(t) if t.scope != r.scope => {
            return Reply::error(
                403,
                format!("The remove token is for {}, not {}", t.scope, r.scope),
            );
        }
        Some(_) => {}
    }
    if r.busy {
        return Reply::error(422, format!("Runner \"{}\" is still running a job", r.name));
    }
    st.delete_runner(id);
    Reply::empty(204)
}

fn open_session(shared: &Shared, req: &Req) -> Reply {
    let body: SessionRequest = if req.body.is_empty() {
        SessionRequest::default()
    } else {
        match parse_body(req) {
            Ok(b) => b,
            Err(r) => return r,
        }
    };
    let mut st = shared.lock();
    let id = match authenticate(&st, req) {
        Ok(id) => id,
        Err(r) => return r,
    };
    // GitHub's broker refuses a runner too old for it with an AccessDeniedException whose
    // errorCode is 1 (actions/runner's BrokerHttpClient: RunnerVersionTooOld); the listener then
    // exits 7 when ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1, else 1.
    if let Some(v) = body.version.as_deref()
        && super::rest::version_older(v, &st.cfg.min_runner_version)
    {
        return Reply::json(
            403,
            serde_json::json!({
                "typeKey": "AccessDeniedException",
                "errorCode": 1,
                "message": format!(
                    "Runner version v{v} is deprecated and cannot receive messages (the oldest accepted is v{}).",
                    st.cfg.min_runner_version
                ),
            }),
        );
    }
    let now = st.now();
    let renew_secs = renew_secs(&st);
    let r = st.runners.get_mut(&id).expect("authenticated");
    if r.session.is_some() {
        // actions/runner exits 5 on this ("session conflict").
        return Reply::error(
            409,
            format!(
                "A session for runner {} already exists: another process is online with this runner's identity",
                r.name
            ),
        );
    }
    let session = random_text(16, HEX);
    r.session = Some(session.clone());
    r.last_seen = now;
    r.os = body.os.unwrap_or_else(|| "Linux".into());
    if body.version.is_some() {
        r.version = body.version;
    }
    Reply::json(
        200,
        serde_json::to_value(SessionResponse {
            session_id: session,
            runner_id: r.id,
            runner_name: r.name.clone(),
            renew_secs,
        })
        .unwrap_or_default(),
    )
}

/// A quarter of the idle time after which a silent runner goes offline: how often a runner renews
/// the job it runs, and how often a waiting job poll counts as hearing from it.
fn renew_secs(st: &State) -> u64 {
    (st.cfg.runner_session_idle_secs / 4).max(1)
}

/// The runner's session, checked against `?session=`.
fn check_session(r: &Runner, req: &Req) -> Result<(), Reply> {
    let asked = req.query_param("session");
    match (&r.session, asked) {
        (Some(have), Some(asked)) if *have == asked => Ok(()),
        (Some(_), Some(_)) => Err(Reply::error(
            409,
            "Session conflict: another session holds this runner",
        )),
        (None, _) => Err(Reply::error(
            409,
            "No session: the runner is offline (POST /_fake/runner/session first)",
        )),
        (Some(_), None) => Err(Reply::error(
            400,
            "The `session` query parameter is required",
        )),
    }
}

fn close_session(shared: &Shared, req: &Req) -> Reply {
    let mut st = shared.lock();
    let id = match authenticate(&st, req) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let r = st.runners.get_mut(&id).expect("authenticated");
    if let Err(e) = check_session(r, req) {
        return e;
    }
    r.session = None;
    Reply::empty(204)
}

/// Long poll: the job for this runner, or 204 after `wait_secs` (at most `long_poll_max_secs`).
async fn next_job(shared: &Shared, req: &Req) -> Reply {
    let (max, renew) = {
        let st = shared.lock();
        (st.cfg.long_poll_max_secs, renew_secs(&st))
    };
    let wait = req
        .query_param("wait_secs")
        .and_then(|w| w.parse::<u64>().ok())
        .unwrap_or(max)
        .min(max);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        // Registered before looking, so a change between the look and the wait still wakes us.
        let changed = shared.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        {
            let mut st = shared.lock();
            let id = match authenticate(&st, req) {
                Ok(id) => id,
                Err(r) => return r,
            };
            if let Err(e) = check_session(&st.runners[&id], req) {
                return e;
            }
            // An open poll is the runner being heard from.
            st.touch_runner(id);
            // A job handed out whose answer was lost is handed out again.
            let held = st.runners[&id]
                .job
                .and_then(|j| st.jobs.get(&j))
                .filter(|j| j.status == JobStatus::Assigned)
                .cloned();
            if let Some(job) = held.or_else(|| st.assign_job(id)) {
                let msg = JobMessage {
                    id: job.id,
                    name: job.name,
                    steps: job.steps,
                };
                return Reply::json(200, serde_json::to_value(msg).unwrap_or_default());
            }
        }
        let wake = deadline.min(tokio::time::Instant::now() + Duration::from_secs(renew));
        if tokio::time::timeout_at(wake, changed).await.is_err()
            && tokio::time::Instant::now() >= deadline
        {
            return Reply::empty(204);
        }
    }
}

/// The job `job_id`, held by the authenticated runner.
fn held_job(st: &State, req: &Req, job_id: u64) -> Result<u64, Reply> {
    let id = authenticate(st, req)?;
    match st.jobs.get(&job_id) {
        Some(j) if j.runner_id == Some(id) && j.status != JobStatus::Completed => Ok(id),
        Some(_) => Err(Reply::error(
            409,
            format!("Job {job_id} is not running on this runner"),
        )),
        None => Err(Reply::not_found()),
    }
}

fn start_job(shared: &Shared, req: &Req, job_id: u64) -> Reply {
    let mut st = shared.lock();
    let id = match held_job(&st, req, job_id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    st.touch_runner(id);
    st.start_job(id, job_id);
    Reply::empty(204)
}

/// The runner still runs the job it holds (actions/runner renews its job lock): it is heard from.
/// A runner that went offline (its session lapsed) has lost the job: 409.
fn renew_job(shared: &Shared, req: &Req, job_id: u64) -> Reply {
    let mut st = shared.lock();
    let id = match held_job(&st, req, job_id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    if st.runners[&id].session.is_none() {
        return Reply::error(
            409,
            "No session: the runner went offline and its job was failed",
        );
    }
    st.touch_runner(id);
    Reply::empty(204)
}

fn complete_job(shared: &Shared, req: &Req, job_id: u64) -> Reply {
    let body: JobCompletion = match parse_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut st = shared.lock();
    let id = match held_job(&st, req, job_id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    st.touch_runner(id);
    st.complete_job(id, job_id, body.result, body.output);
    Reply::empty(204)
}
