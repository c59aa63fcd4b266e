//! The Actions service of the runner scale set API (`/_actions/{scope}/…`) and the REST call that
//! leads to it (`POST {api}/actions/runner-registration`): routing, the admin and queue tokens,
//! the answers and their JSON (camelCase, `{"count","value"}` lists, `{"typeName","message"}`
//! errors) as `shared/SCALESET.md` describes them. What it remembers is `scaleset`'s; faults and
//! the request log are `server`'s.

use super::runner_api;
use super::scaleset::{MESSAGE_TYPE, ScaleSet, Session};
use super::server::{Reply, Req, Shared};
use super::state::{HEX, RunnerTokenKind, ScopeKey, State, random_text};
use super::time::rfc3339;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

/// The `api-version` every Actions-service call but the queue's carries.
pub(crate) const API_VERSION: &str = "6.0-preview";

/// The Actions service's error body (Azure DevOps' shape; clients read `typeName` and `message`).
pub(crate) fn error(status: u16, type_name: &str, message: impl Into<String>) -> Reply {
    Reply::json(
        status,
        json!({
            "$id": "1",
            "innerException": null,
            "message": message.into(),
            "typeName": type_name,
            "typeKey": type_name,
            "errorCode": 0,
            "eventId": 3000,
        }),
    )
}

fn list(items: Vec<Value>) -> Reply {
    Reply::json(200, json!({"count": items.len(), "value": items}))
}

// --- POST {api}/actions/runner-registration (on the REST side) ---

/// `POST {api}/actions/runner-registration` with `Authorization: RemoteAuth <registration token>`
/// and `{"url": <config URL>, "runner_event": "register"}`: the Actions-service URL of the
/// config URL's scope and an admin token for it. REST errors (`basic-error`), as GitHub's API.
pub(crate) fn runner_registration(st: &mut State, req: &Req, web: &str) -> Reply {
    let token = req.header("authorization").and_then(|h| {
        let (scheme, value) = h.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("RemoteAuth")
            .then(|| value.trim())
            .filter(|v| !v.is_empty())
    });
    let Some(token) = token else {
        return Reply::error(
            401,
            "Requires authentication: Authorization: RemoteAuth <registration token>",
        );
    };
    let Some(granted) = st
        .runner_token(token, RunnerTokenKind::Registration)
        .map(|t| t.scope.clone())
    else {
        return Reply::error(
            401,
            "Bad credentials: invalid or expired registration token",
        );
    };
    let Some(body) = req.body_json().filter(Value::is_object) else {
        return Reply::error(400, "Problems parsing JSON");
    };
    let url = body["url"].as_str().unwrap_or("");
    if body["runner_event"].as_str() != Some("register") {
        return Reply::error(
            422,
            format!(
                "runner_event {}: expected \"register\"",
                body["runner_event"]
            ),
        );
    }
    let Some(scope) = url
        .trim_end_matches('/')
        .strip_prefix(web)
        .and_then(|p| st.scope_from_web_path(p))
    else {
        return Reply::error(
            404,
            format!(
                "No repository, organization or enterprise at {url:?} (expected {web}/OWNER/REPO, {web}/ORG or {web}/enterprises/ENT)"
            ),
        );
    };
    if scope != granted {
        return Reply::error(
            403,
            format!("The registration token is for {granted}, not {scope}"),
        );
    }
    let service = st.actions.service_url(&scope);
    let now = st.now();
    let expires_at = now + st.cfg.actions_admin_token_ttl_secs as i64;
    let token = st
        .actions
        .issue_admin_token(scope, now, expires_at, &service);
    Reply::json(201, json!({"url": service, "token": token}))
}

// --- the Actions service ---

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    RunnerGroups,
    ListScaleSets,
    CreateScaleSet,
    GetScaleSet(u64),
    UpdateScaleSet(u64),
    DeleteScaleSet(u64),
    JitConfig(u64),
    CreateSession(u64),
    RefreshSession(u64, String),
    DeleteSession(u64, String),
    GetMessage(u64),
    DeleteMessage(u64, u64),
    AcquireJobs(u64),
    ListAgents,
    GetAgent(u64),
    DeleteAgent(u64),
}

impl Op {
    /// The calls authorized by the session's queue token rather than the admin token.
    fn queue_call(&self) -> Option<u64> {
        match self {
            Op::GetMessage(id) | Op::DeleteMessage(id, _) | Op::AcquireJobs(id) => Some(*id),
            _ => None,
        }
    }
}

/// Method and the path after `_apis/` to an operation; `None` is a 404.
fn parse_op(method: &str, segs: &[&str]) -> Option<Op> {
    let num = |s: &str| s.parse::<u64>().ok();
    let op = match (method, segs) {
        ("GET", ["runtime", "runnergroups"]) => Op::RunnerGroups,
        ("GET", ["runtime", "runnerscalesets"]) => Op::ListScaleSets,
        ("POST", ["runtime", "runnerscalesets"]) => Op::CreateScaleSet,
        ("GET", ["runtime", "runnerscalesets", id]) => Op::GetScaleSet(num(id)?),
        ("PATCH", ["runtime", "runnerscalesets", id]) => Op::UpdateScaleSet(num(id)?),
        ("DELETE", ["runtime", "runnerscalesets", id]) => Op::DeleteScaleSet(num(id)?),
        ("POST", ["runtime", "runnerscalesets", id, "generatejitconfig"]) => {
            Op::JitConfig(num(id)?)
        }
        ("POST", ["runtime", "runnerscalesets", id, "sessions"]) => Op::CreateSession(num(id)?),
        ("PATCH", ["runtime", "runnerscalesets", id, "sessions", s]) => {
            Op::RefreshSession(num(id)?, s.to_string())
        }
        ("DELETE", ["runtime", "runnerscalesets", id, "sessions", s]) => {
            Op::DeleteSession(num(id)?, s.to_string())
        }
        ("GET", ["runtime", "runnerscalesets", id, "messages"]) => Op::GetMessage(num(id)?),
        ("DELETE", ["runtime", "runnerscalesets", id, "messages", m]) => {
            Op::DeleteMessage(num(id)?, num(m)?)
        }
        ("POST", ["runtime", "runnerscalesets", id, "acquirejobs"]) => Op::AcquireJobs(num(id)?),
        ("GET", ["distributedtask", "pools", p, "agents"]) if num(p).is_some() => Op::ListAgents,
        ("GET", ["distributedtask", "pools", p, "agents", a]) if num(p).is_some() => {
            Op::GetAgent(num(a)?)
        }
        ("DELETE", ["distributedtask", "pools", p, "agents", a]) if num(p).is_some() => {
            Op::DeleteAgent(num(a)?)
        }
        _ => return None,
    };
    Some(op)
}

/// `/_actions/{scope}/_apis/{rest}` to the scope's spelling (`orgs/o`) and the segments of
/// `rest` (a trailing `/` ignored: clients send `runnergroups/`).
fn split_path(path: &str) -> Option<(&str, Vec<&str>)> {
    let rest = path.strip_prefix("/_actions/")?;
    let (scope, apis) = rest.split_once("/_apis/")?;
    let mut segs: Vec<&str> = apis.split('/').collect();
    if segs.last() == Some(&"") {
        segs.pop();
    }
    Some((scope, segs))
}

/// Whether a request path belongs to the Actions service.
pub(crate) fn owns(path: &str) -> bool {
    path.starts_with("/_actions/")
}

/// How the request log shows an Actions-service credential: its kind, never its value.
pub(crate) fn redact(st: &State, header: &str) -> String {
    let scheme = header.split_whitespace().next().unwrap_or("");
    let kind = match super::auth::bearer(Some(header)) {
        Some(t) if st.actions.admin_tokens.contains_key(t) => "admin-token",
        Some(t)
            if st
                .actions
                .scale_sets
                .values()
                .any(|ss| ss.session.as_ref().is_some_and(|s| s.queue_token == t)) =>
        {
            "queue-token"
        }
        _ => "unknown",
    };
    format!("{scheme} <{kind}>")
}

struct Call {
    scope: ScopeKey,
    op: Op,
}

/// Routes, authenticates and checks the `api-version` of an Actions-service request.
fn admit(st: &State, req: &Req) -> Result<Call, Reply> {
    let not_found = || {
        error(
            404,
            "NotFoundException",
            format!("No resource at {}", req.path),
        )
    };
    let (scope_text, segs) = split_path(&req.path).ok_or_else(not_found)?;
    let scope = st.scope_from_str(scope_text).ok_or_else(not_found)?;
    let op = parse_op(&req.method, &segs).ok_or_else(not_found)?;
    let now = st.now();
    let token = super::auth::bearer(req.header("authorization"));
    match op.queue_call() {
        Some(ss_id) => {
            let idle = st.cfg.actions_session_idle_secs;
            let owner = token.and_then(|t| st.actions.queue_token_owner(t, now, idle));
            if owner != Some(ss_id) {
                return Err(error(
                    401,
                    "VssUnauthorizedException",
                    "The message queue token is not valid: unknown, expired, replaced by a session refresh, or for another scale set",
                ));
            }
        }
        None => {
            let ok = token
                .and_then(|t| st.actions.admin_tokens.get(t))
                .is_some_and(|t| t.expires_at > now && t.scope == scope);
            if !ok {
                return Err(error(
                    401,
                    "VssUnauthorizedException",
                    format!(
                        "The admin token is not valid for {scope}: unknown, expired or for another scope (POST …/actions/runner-registration for a new one)"
                    ),
                ));
            }
        }
    }
    // The queue's GET and DELETE go to `messageQueueUrl` as handed out, without `api-version`.
    if !matches!(op, Op::GetMessage(_) | Op::DeleteMessage(..))
        && req.query_param("api-version").as_deref() != Some(API_VERSION)
    {
        return Err(error(
            400,
            "VssVersionNotSupportedException",
            format!(
                "api-version {:?}: this service expects api-version={API_VERSION}",
                req.query_param("api-version").unwrap_or_default()
            ),
        ));
    }
    Ok(Call { scope, op })
}

pub(crate) async fn handle(shared: &Shared, req: &Req) -> Reply {
    let call = match admit(&shared.lock(), req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Op::GetMessage(ss_id) = call.op {
        return get_message(shared, req, ss_id).await;
    }
    let mut st = shared.lock();
    answer(&mut st, req, &call, &shared.web_url)
}

fn answer(st: &mut State, req: &Req, call: &Call, web: &str) -> Reply {
    let scope = &call.scope;
    match &call.op {
        Op::RunnerGroups => runner_groups(st, req, scope),
        Op::ListScaleSets => {
            let name = req.query_param("name");
            let group = req
                .query_param("runnerGroupId")
                .and_then(|g| g.parse::<u64>().ok());
            let items = st
                .actions
                .scale_sets
                .values()
                .filter(|ss| &ss.scope == scope)
                .filter(|ss| {
                    name.as_deref()
                        .is_none_or(|n| ss.name.eq_ignore_ascii_case(n))
                })
                .filter(|ss| group.is_none_or(|g| ss.group_id == g))
                .map(|ss| scale_set_json(st, ss))
                .collect();
            list(items)
        }
        Op::CreateScaleSet => create_scale_set(st, req, scope),
        Op::GetScaleSet(id) => match scale_set_in(st, scope, *id) {
            Ok(ss) => Reply::json(200, scale_set_json(st, ss)),
            Err(r) => r,
        },
        Op::UpdateScaleSet(id) => update_scale_set(st, req, scope, *id),
        Op::DeleteScaleSet(id) => {
            if let Err(r) = scale_set_in(st, scope, *id) {
                return r;
            }
            st.delete_scale_set(*id);
            Reply::empty(204)
        }
        Op::JitConfig(id) => jit_config(st, req, scope, *id, web),
        Op::CreateSession(id) => create_session(st, req, scope, *id),
        Op::RefreshSession(id, sid) => refresh_session(st, scope, *id, sid),
        Op::DeleteSession(id, sid) => delete_session(st, scope, *id, sid),
        Op::GetMessage(_) => unreachable!("answered by get_message"),
        Op::DeleteMessage(id, mid) => {
            if let Some(ss) = st.actions.scale_sets.get_mut(id) {
                ss.messages.retain(|m| m.id != *mid);
            }
            let now = st.now();
            touch(st, *id, now);
            Reply::empty(204)
        }
        Op::AcquireJobs(id) => {
            let Some(ids) = req.body_json().and_then(|v| {
                v.as_array()
                    .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
            }) else {
                return error(
                    400,
                    "ArgumentException",
                    "The body must be a JSON array of runnerRequestIds",
                );
            };
            let got = st.acquire_jobs(*id, &ids);
            Reply::json(200, json!({"count": got.len(), "value": got}))
        }
        Op::ListAgents => {
            let name = req.query_param("agentName");
            let items = st
                .runners
                .values()
                .filter(|r| &r.scope == scope)
                .filter(|r| {
                    name.as_deref()
                        .is_none_or(|n| r.name.eq_ignore_ascii_case(n))
                })
                .map(agent_json)
                .collect();
            list(items)
        }
        Op::GetAgent(id) => match st.runner_in(scope, *id) {
            Some(r) => Reply::json(200, agent_json(r)),
            None => agent_not_found(*id),
        },
        Op::DeleteAgent(id) => match st.runner_in(scope, *id) {
            None => agent_not_found(*id),
            Some(r) if r.busy => error(
                409,
                "JobStillRunningException",
                format!("Runner {} is running a job and cannot be removed", r.name),
            ),
            Some(_) => {
                st.delete_runner(*id);
                Reply::empty(204)
            }
        },
    }
}

fn agent_not_found(id: u64) -> Reply {
    error(
        404,
        "AgentNotFoundException",
        format!("No runner with id {id}"),
    )
}

fn agent_json(r: &super::state::Runner) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "runnerScaleSetId": r.scale_set.unwrap_or(0),
        "status": r.status(),
        "busy": r.busy,
        "ephemeral": r.ephemeral,
    })
}

fn runner_groups(st: &State, req: &Req, scope: &ScopeKey) -> Reply {
    let name = req.query_param("groupName");
    let groups: Vec<(u64, String, bool)> = if scope.has_groups() {
        st.groups_of(scope)
            .iter()
            .map(|g| (g.id, g.name.clone(), g.default))
            .collect()
    } else {
        vec![(1, "Default".into(), true)]
    };
    let items = groups
        .into_iter()
        .filter(|(_, n, _)| name.as_deref().is_none_or(|w| n.eq_ignore_ascii_case(w)))
        .map(|(id, n, default)| {
            let size = st
                .runners
                .values()
                .filter(|r| &r.scope == scope && r.group_id == id)
                .count();
            json!({"id": id, "name": n, "size": size, "isDefaultGroup": default})
        })
        .collect();
    list(items)
}

fn scale_set_not_found(id: u64) -> Reply {
    error(
        404,
        "RunnerScaleSetNotFoundException",
        format!("No runner scale set with id {id}"),
    )
}

fn scale_set_in<'a>(st: &'a State, scope: &ScopeKey, id: u64) -> Result<&'a ScaleSet, Reply> {
    st.actions
        .scale_sets
        .get(&id)
        .filter(|ss| &ss.scope == scope)
        .ok_or_else(|| scale_set_not_found(id))
}

fn group_name(st: &State, scope: &ScopeKey, id: u64) -> Option<String> {
    if scope.has_groups() {
        st.group(scope, id).map(|g| g.name.clone())
    } else {
        (id == 1).then(|| "Default".to_string())
    }
}

pub(crate) fn scale_set_json(st: &State, ss: &ScaleSet) -> Value {
    let service = st.actions.service_url(&ss.scope);
    json!({
        "id": ss.id,
        "name": ss.name,
        "runnerGroupId": ss.group_id,
        "runnerGroupName": group_name(st, &ss.scope, ss.group_id).unwrap_or_default(),
        "labels": ss.labels.iter().map(|(n, t)| json!({"type": t, "name": n})).collect::<Vec<_>>(),
        "RunnerSetting": ss.runner_setting,
        "createdOn": rfc3339(ss.created_on),
        "runnerJitConfigUrl": format!("{service}_apis/runtime/runnerscalesets/{}/generatejitconfig", ss.id),
        "statistics": st.scale_set_statistics(ss.id),
    })
}

/// `labels` of a scale set body: `[{"name","type"}]`, an empty `type` read as `System`.
fn read_labels(v: &Value) -> Result<Vec<(String, String)>, Reply> {
    let bad = || {
        error(
            400,
            "ArgumentException",
            "labels: expected [{\"name\": \"…\", \"type\": \"System\"}, …]",
        )
    };
    let Some(items) = v.as_array() else {
        return Err(bad());
    };
    items
        .iter()
        .map(|l| {
            let name = l["name"].as_str().map(str::trim).filter(|n| !n.is_empty());
            let kind = l["type"]
                .as_str()
                .filter(|t| !t.is_empty())
                .unwrap_or("System");
            name.map(|n| (n.to_string(), kind.to_string()))
                .ok_or_else(bad)
        })
        .collect()
}

fn name_taken(st: &State, scope: &ScopeKey, group: u64, name: &str, except: u64) -> bool {
    st.actions.scale_sets.values().any(|ss| {
        &ss.scope == scope
            && ss.group_id == group
            && ss.id != except
            && ss.name.eq_ignore_ascii_case(name)
    })
}

fn exists(name: &str) -> Reply {
    error(
        409,
        "RunnerScaleSetExistsException",
        format!("A runner scale set named {name} already exists in this runner group"),
    )
}

fn create_scale_set(st: &mut State, req: &Req, scope: &ScopeKey) -> Reply {
    let Some(body) = req.body_json().filter(Value::is_object) else {
        return error(
            400,
            "ArgumentException",
            "The body must be a RunnerScaleSet object",
        );
    };
    let name = body["name"].as_str().map(str::trim).unwrap_or("");
    if name.is_empty() {
        return error(400, "ArgumentException", "name is required");
    }
    // ss and ARC omit a zero group id; group 1 is "Default" everywhere.
    let group = body["runnerGroupId"]
        .as_u64()
        .filter(|g| *g != 0)
        .unwrap_or(1);
    if group_name(st, scope, group).is_none() {
        return error(
            404,
            "RunnerGroupNotFoundException",
            format!("No runner group {group} in {scope}"),
        );
    }
    if name_taken(st, scope, group, name, 0) {
        return exists(name);
    }
    let mut labels = match body.get("labels") {
        None | Some(Value::Null) => vec![],
        Some(v) => match read_labels(v) {
            Ok(l) => l,
            Err(r) => return r,
        },
    };
    if labels.is_empty() {
        labels.push((name.to_string(), "System".to_string()));
    }
    let mut setting = match body.get("RunnerSetting") {
        Some(Value::Object(m)) => Value::Object(m.clone()),
        _ => json!({}),
    };
    if setting.get("disableUpdate").is_none() {
        setting["disableUpdate"] = json!(false);
    }
    let id = st.actions.next_scale_set_id();
    let now = st.now();
    st.actions.scale_sets.insert(
        id,
        ScaleSet {
            id,
            scope: scope.clone(),
            name: name.to_string(),
            group_id: group,
            labels,
            runner_setting: setting,
            created_on: now,
            session: None,
            messages: vec![],
            pending: vec![],
            offered: BTreeSet::new(),
            last_max_capacity: None,
        },
    );
    st.offer_jobs();
    // 200, not 201: what the Actions service answers and ss insists on (SCALESET.md §2).
    Reply::json(200, scale_set_json(st, &st.actions.scale_sets[&id]))
}

fn update_scale_set(st: &mut State, req: &Req, scope: &ScopeKey, id: u64) -> Reply {
    let current = match scale_set_in(st, scope, id) {
        Ok(ss) => ss.clone(),
        Err(r) => return r,
    };
    let Some(body) = req.body_json().filter(Value::is_object) else {
        return error(
            400,
            "ArgumentException",
            "The body must be a RunnerScaleSet object",
        );
    };
    let name = match body["name"].as_str().map(str::trim) {
        Some("") | None => current.name.clone(),
        Some(n) => n.to_string(),
    };
    let group = body["runnerGroupId"]
        .as_u64()
        .filter(|g| *g != 0)
        .unwrap_or(current.group_id);
    if group_name(st, scope, group).is_none() {
        return error(
            404,
            "RunnerGroupNotFoundException",
            format!("No runner group {group} in {scope}"),
        );
    }
    if name_taken(st, scope, group, &name, id) {
        return exists(&name);
    }
    let labels = match body.get("labels") {
        None | Some(Value::Null) => current.labels.clone(),
        Some(v) => match read_labels(v) {
            Ok(l) if l.is_empty() => current.labels.clone(),
            Ok(l) => l,
            Err(r) => return r,
        },
    };
    let mut setting = current.runner_setting.clone();
    if let Some(Value::Object(m)) = body.get("RunnerSetting") {
        for (k, v) in m {
            setting[k] = v.clone();
        }
    }
    if let Some(ss) = st.actions.scale_sets.get_mut(&id) {
        ss.name = name;
        ss.group_id = group;
        ss.labels = labels;
        ss.runner_setting = setting;
    }
    st.offer_jobs();
    Reply::json(200, scale_set_json(st, &st.actions.scale_sets[&id]))
}

fn jit_config(st: &mut State, req: &Req, scope: &ScopeKey, id: u64, web: &str) -> Reply {
    let ss = match scale_set_in(st, scope, id) {
        Ok(ss) => ss.clone(),
        Err(r) => return r,
    };
    let Some(body) = req.body_json().filter(Value::is_object) else {
        return error(
            400,
            "ArgumentException",
            "The body must be {\"name\", \"workFolder\"}",
        );
    };
    let name = body["name"].as_str().map(str::trim).unwrap_or("");
    if name.is_empty() {
        return error(400, "ArgumentException", "name is required");
    }
    if st.runner_by_name(scope, name).is_some() {
        return error(
            409,
            "AgentExistsException",
            format!("A runner with the name {name} already exists."),
        );
    }
    let work = body["workFolder"]
        .as_str()
        .filter(|w| !w.is_empty())
        .unwrap_or("_work");
    let labels = ss.labels.iter().map(|(n, _)| n.clone()).collect();
    let runner_id = st.create_runner(scope.clone(), name, ss.group_id, labels, true, true, work);
    if let Some(r) = st.runners.get_mut(&runner_id) {
        r.scale_set = Some(id);
    }
    let r = &st.runners[&runner_id];
    let encoded = runner_api::identity(st, r, web).encode();
    Reply::json(
        200,
        json!({
            "runner": {"id": r.id, "name": r.name, "runnerScaleSetId": id},
            "encodedJITConfig": encoded,
        }),
    )
}

fn uuid() -> String {
    format!(
        "{}-{}-4{}-8{}-{}",
        random_text(8, HEX),
        random_text(4, HEX),
        random_text(3, HEX),
        random_text(3, HEX),
        random_text(12, HEX)
    )
}

fn session_json(st: &State, ss: &ScaleSet, s: &Session) -> Value {
    json!({
        "sessionId": s.id,
        "ownerName": s.owner_name,
        "runnerScaleSet": scale_set_json(st, ss),
        "messageQueueUrl": format!(
            "{}_apis/runtime/runnerscalesets/{}/messages?sessionId={}",
            st.actions.service_url(&ss.scope), ss.id, s.id
        ),
        "messageQueueAccessToken": s.queue_token,
        "statistics": st.scale_set_statistics(ss.id),
    })
}

fn queue_token() -> String {
    random_text(48, super::state::ALNUM)
}

fn create_session(st: &mut State, req: &Req, scope: &ScopeKey, id: u64) -> Reply {
    let ss = match scale_set_in(st, scope, id) {
        Ok(ss) => ss,
        Err(r) => return r,
    };
    let now = st.now();
    let idle = st.cfg.actions_session_idle_secs;
    if ss.live_session(now, idle).is_some() {
        return error(
            409,
            "RunnerScaleSetSessionConflictException",
            format!(
                "The runner scale set {} already has an active session for owner {}.",
                ss.name,
                ss.session.as_ref().map_or("", |s| s.owner_name.as_str())
            ),
        );
    }
    let owner = req
        .body_json()
        .and_then(|b| b["ownerName"].as_str().map(str::to_string))
        .unwrap_or_default();
    let session = Session {
        id: uuid(),
        owner_name: owner,
        queue_token: queue_token(),
        queue_token_expires_at: now + st.cfg.actions_queue_token_ttl_secs as i64,
        last_seen: now,
    };
    if let Some(ss) = st.actions.scale_sets.get_mut(&id) {
        ss.session = Some(session.clone());
    }
    st.reoffer_jobs(id);
    let ss = &st.actions.scale_sets[&id];
    Reply::json(200, session_json(st, ss, &session))
}

/// The scale set's session with this id, live; else the error GitHub gives.
fn session_of(st: &State, ss: &ScaleSet, sid: &str) -> Result<Session, Reply> {
    let Some(s) = ss
        .session
        .as_ref()
        .filter(|s| s.id.eq_ignore_ascii_case(sid))
    else {
        return Err(error(
            404,
            "RunnerScaleSetSessionNotFoundException",
            format!("No session {sid} for runner scale set {}", ss.name),
        ));
    };
    if ss
        .live_session(st.now(), st.cfg.actions_session_idle_secs)
        .is_none()
    {
        return Err(error(
            400,
            "RunnerScaleSetSessionExpiredException",
            format!(
                "The session {sid} of runner scale set {} has expired.",
                ss.name
            ),
        ));
    }
    Ok(s.clone())
}

fn refresh_session(st: &mut State, scope: &ScopeKey, id: u64, sid: &str) -> Reply {
    let ss = match scale_set_in(st, scope, id) {
        Ok(ss) => ss,
        Err(r) => return r,
    };
    let mut session = match session_of(st, ss, sid) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let now = st.now();
    session.queue_token = queue_token();
    session.queue_token_expires_at = now + st.cfg.actions_queue_token_ttl_secs as i64;
    session.last_seen = now;
    if let Some(ss) = st.actions.scale_sets.get_mut(&id) {
        ss.session = Some(session.clone());
    }
    let ss = &st.actions.scale_sets[&id];
    Reply::json(200, session_json(st, ss, &session))
}

fn delete_session(st: &mut State, scope: &ScopeKey, id: u64, sid: &str) -> Reply {
    let ss = match scale_set_in(st, scope, id) {
        Ok(ss) => ss,
        Err(r) => return r,
    };
    if let Err(r) = session_of(st, ss, sid) {
        return r;
    }
    if let Some(ss) = st.actions.scale_sets.get_mut(&id) {
        ss.session = None;
    }
    Reply::empty(204)
}

/// A queue call keeps the session alive.
fn touch(st: &mut State, ss_id: u64, now: i64) {
    if let Some(s) = st
        .actions
        .scale_sets
        .get_mut(&ss_id)
        .and_then(|ss| ss.session.as_mut())
    {
        s.last_seen = now;
    }
}

/// The queue's long poll: the oldest message above `lastMessageId`, or 202 after
/// `actions_message_wait_millis`, woken early by any change.
async fn get_message(shared: &Shared, req: &Req, ss_id: u64) -> Reply {
    let Some(capacity) = req
        .header("x-scalesetmaxcapacity")
        .and_then(|c| c.trim().parse::<u64>().ok())
    else {
        return error(
            400,
            "ArgumentException",
            format!(
                "X-ScaleSetMaxCapacity {:?}: a non-negative integer is required",
                req.header("x-scalesetmaxcapacity").unwrap_or("")
            ),
        );
    };
    let last = req
        .query_param("lastMessageId")
        .and_then(|l| l.parse::<u64>().ok())
        .unwrap_or(0);
    let wait = {
        let mut st = shared.lock();
        let now = st.now();
        touch(&mut st, ss_id, now);
        if let Some(ss) = st.actions.scale_sets.get_mut(&ss_id) {
            ss.last_max_capacity = Some(capacity);
        }
        st.cfg.actions_message_wait_millis
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait);
    loop {
        // Registered before looking, so a change between the look and the wait still wakes us.
        let changed = shared.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        {
            let mut st = shared.lock();
            let now = st.now();
            let idle = st.cfg.actions_session_idle_secs;
            let token = super::auth::bearer(req.header("authorization")).unwrap_or("");
            if st.actions.queue_token_owner(token, now, idle) != Some(ss_id) {
                return error(
                    401,
                    "VssUnauthorizedException",
                    "The message queue token is no longer valid (the session was refreshed, deleted or expired)",
                );
            }
            if let Some(m) = st.actions.next_message(ss_id, last) {
                touch(&mut st, ss_id, now);
                let body = serde_json::to_string(&m.events).unwrap_or_else(|_| "[]".into());
                return Reply::json(
                    200,
                    json!({
                        "messageId": m.id,
                        "messageType": MESSAGE_TYPE,
                        "body": body,
                        "statistics": st.scale_set_statistics(ss_id),
                    }),
                );
            }
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            let mut st = shared.lock();
            let now = st.now();
            touch(&mut st, ss_id, now);
            return Reply::empty(202);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_operations() {
        let op = |m: &str, p: &str| {
            let (scope, segs) = split_path(p)?;
            assert_eq!(scope, "orgs/octo-org");
            parse_op(m, &segs)
        };
        let base = "/_actions/orgs/octo-org/_apis/";
        assert_eq!(
            op("GET", &format!("{base}runtime/runnergroups/")),
            Some(Op::RunnerGroups)
        );
        assert_eq!(
            op(
                "POST",
                &format!("{base}runtime/runnerscalesets/3/generatejitconfig")
            ),
            Some(Op::JitConfig(3))
        );
        assert_eq!(
            op(
                "DELETE",
                &format!("{base}runtime/runnerscalesets/3/messages/17")
            ),
            Some(Op::DeleteMessage(3, 17))
        );
        assert_eq!(
            op("DELETE", &format!("{base}distributedtask/pools/0/agents/9")),
            Some(Op::DeleteAgent(9))
        );
        assert_eq!(op("PUT", &format!("{base}runtime/runnerscalesets/3")), None);
        assert_eq!(op("GET", &format!("{base}runtime/runnerscalesets/x")), None);
        assert!(split_path("/_actions/orgs/octo-org/nothing").is_none());
    }
}
