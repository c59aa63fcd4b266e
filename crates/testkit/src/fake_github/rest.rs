//! GitHub's REST API for runners, runner groups, labels, tokens, JIT configs, downloads, the App
//! and the rate limit: routing, the checks GitHub makes before an operation (User-Agent, API
//! version, credentials, scope, permission), the operations, and the JSON shapes of
//! `runners-openapi.json`. Owns the answers; the state's invariants are `state`'s.

use super::auth::{self, Access, Cred, Denied};
use super::runner_api;
use super::server::{Reply, Req, Shared};
use super::state::{
    Group, HEX, RateInfo, Runner, RunnerTokenKind, ScopeKey, State, is_read_only_label, random_text,
};
use super::time::rfc3339;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The only REST API version GitHub serves today.
const API_VERSION: &str = "2022-11-28";

pub(crate) fn handle(shared: &Shared, req: &Req, api_path: &str, prefix: &str) -> Reply {
    let ctx = Ctx {
        api: format!("{}{prefix}", shared.web_url),
        web: shared.web_url.clone(),
        api_path: api_path.to_string(),
    };
    let mut st = shared.lock();
    // /rate_limit does not count against the limit, as on GitHub.
    let rate = if api_path == "/rate_limit" {
        st.rate_info()
    } else {
        st.count_request()
    };
    let reply = answer(&mut st, req, &ctx);
    with_common_headers(reply, rate)
}

/// Headers GitHub puts on every REST answer; those the reply already has are kept.
pub(crate) fn with_common_headers(mut reply: Reply, rate: RateInfo) -> Reply {
    let has = |r: &Reply, n: &str| r.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    let request_id = format!(
        "{}:{}:{}:{}:{}",
        random_text(4, HEX),
        random_text(6, HEX),
        random_text(7, HEX),
        random_text(7, HEX),
        random_text(8, HEX)
    )
    .to_uppercase();
    let common = [
        ("x-github-request-id", request_id),
        ("x-ratelimit-limit", rate.limit.to_string()),
        ("x-ratelimit-remaining", rate.remaining.to_string()),
        ("x-ratelimit-reset", rate.reset.to_string()),
        ("x-ratelimit-used", rate.used.to_string()),
        ("x-ratelimit-resource", "core".to_string()),
        ("x-github-api-version-selected", API_VERSION.to_string()),
        ("x-github-media-type", "github.v3; format=json".to_string()),
    ];
    for (k, v) in common {
        if !has(&reply, k) {
            reply.headers.push((k.to_string(), v));
        }
    }
    reply
}

/// URLs of this request: `api` is the REST base it came under (with the base path), `web` the root.
struct Ctx {
    api: String,
    web: String,
    api_path: String,
}

#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    Repo(&'a str, &'a str),
    Org(&'a str),
    Ent(&'a str),
}

#[derive(Debug, Clone)]
enum Ep<'a> {
    GetApp,
    CreateAccessToken(u64),
    RateLimit,
    GetInstallation(Target<'a>),
    Scoped(Target<'a>, Op<'a>),
    /// `POST /actions/runner-registration`: not in the OpenAPI description (SCALESET.md §1); the
    /// scale set client's way to the Actions service (`actions`).
    RunnerRegistration,
}

#[derive(Debug, Clone)]
enum Op<'a> {
    ListRunners,
    Downloads,
    Deprecation(&'a str),
    JitConfig,
    RegistrationToken,
    RemoveToken,
    GetRunner(u64),
    DeleteRunner(u64),
    ListLabels(u64),
    AddLabels(u64),
    SetLabels(u64),
    RemoveAllLabels(u64),
    RemoveLabel(u64, String),
    ListGroups,
    CreateGroup,
    GetGroup(u64),
    UpdateGroup(u64),
    DeleteGroup(u64),
    ListGroupRunners(u64),
    SetGroupRunners(u64),
    AddGroupRunner(u64, u64),
    RemoveGroupRunner(u64, u64),
    /// Repositories (org groups) or organizations (enterprise groups) that may use the group.
    ListGroupAccess(u64),
    SetGroupAccess(u64),
    AddGroupAccess(u64, u64),
    RemoveGroupAccess(u64, u64),
}

fn num(s: &str) -> Option<u64> {
    s.parse().ok()
}

/// Maps method and path to an operation of the OpenAPI description; `None` is GitHub's 404.
fn parse<'a>(method: &str, segs: &[&'a str]) -> Option<Ep<'a>> {
    match segs {
        ["app"] if method == "GET" => Some(Ep::GetApp),
        ["app", "installations", id, "access_tokens"] if method == "POST" => {
            Some(Ep::CreateAccessToken(num(id)?))
        }
        ["rate_limit"] if method == "GET" => Some(Ep::RateLimit),
        ["actions", "runner-registration"] if method == "POST" => Some(Ep::RunnerRegistration),
        ["repos", o, r, rest @ ..] => scoped(method, Target::Repo(o, r), rest),
        ["orgs", o, rest @ ..] => scoped(method, Target::Org(o), rest),
        ["enterprises", e, rest @ ..] => scoped(method, Target::Ent(e), rest),
        _ => None,
    }
}

fn scoped<'a>(m: &str, t: Target<'a>, rest: &[&'a str]) -> Option<Ep<'a>> {
    use Op::*;
    if rest == ["installation"] && m == "GET" {
        return Some(Ep::GetInstallation(t));
    }
    let op = match (m, rest) {
        ("GET", ["actions", "runners"]) => ListRunners,
        ("GET", ["actions", "runners", "downloads"]) => Downloads,
        ("GET", ["actions", "runners", "deprecations", v]) => Deprecation(v),
        ("POST", ["actions", "runners", "generate-jitconfig"]) => JitConfig,
        ("POST", ["actions", "runners", "registration-token"]) => RegistrationToken,
        ("POST", ["actions", "runners", "remove-token"]) => RemoveToken,
        ("GET", ["actions", "runners", id]) => GetRunner(num(id)?),
        ("DELETE", ["actions", "runners", id]) => DeleteRunner(num(id)?),
        ("GET", ["actions", "runners", id, "labels"]) => ListLabels(num(id)?),
        ("POST", ["actions", "runners", id, "labels"]) => AddLabels(num(id)?),
        ("PUT", ["actions", "runners", id, "labels"]) => SetLabels(num(id)?),
        ("DELETE", ["actions", "runners", id, "labels"]) => RemoveAllLabels(num(id)?),
        ("DELETE", ["actions", "runners", id, "labels", name]) => {
            RemoveLabel(num(id)?, percent_decode(name)?)
        }
        _ => {
            let access = match t {
                Target::Repo(..) => return None,
                Target::Org(_) => "repositories",
                Target::Ent(_) => "organizations",
            };
            match (m, rest) {
                ("GET", ["actions", "runner-groups"]) => ListGroups,
                ("POST", ["actions", "runner-groups"]) => CreateGroup,
                ("GET", ["actions", "runner-groups", g]) => GetGroup(num(g)?),
                ("PATCH", ["actions", "runner-groups", g]) => UpdateGroup(num(g)?),
                ("DELETE", ["actions", "runner-groups", g]) => DeleteGroup(num(g)?),
                ("GET", ["actions", "runner-groups", g, "runners"]) => ListGroupRunners(num(g)?),
                ("PUT", ["actions", "runner-groups", g, "runners"]) => SetGroupRunners(num(g)?),
                ("PUT", ["actions", "runner-groups", g, "runners", r]) => {
                    AddGroupRunner(num(g)?, num(r)?)
                }
                ("DELETE", ["actions", "runner-groups", g, "runners", r]) => {
                    RemoveGroupRunner(num(g)?, num(r)?)
                }
                ("GET", ["actions", "runner-groups", g, a]) if *a == access => {
                    ListGroupAccess(num(g)?)
                }
                ("PUT", ["actions", "runner-groups", g, a]) if *a == access => {
                    SetGroupAccess(num(g)?)
                }
                ("PUT", ["actions", "runner-groups", g, a, i]) if *a == access => {
                    AddGroupAccess(num(g)?, num(i)?)
                }
                ("DELETE", ["actions", "runner-groups", g, a, i]) if *a == access => {
                    RemoveGroupAccess(num(g)?, num(i)?)
                }
                _ => return None,
            }
        }
    };
    Some(Ep::Scoped(t, op))
}

/// `%XX` escapes of a path segment; `None` for a broken escape or non-UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn resolve(st: &State, t: Target<'_>) -> Option<ScopeKey> {
    match t {
        Target::Repo(o, r) => st.repo(o, r),
        Target::Org(o) => st.org(o),
        Target::Ent(e) => st.enterprise(e),
    }
}

fn answer(st: &mut State, req: &Req, ctx: &Ctx) -> Reply {
    // GitHub refuses a request without User-Agent before anything else.
    if req
        .header("user-agent")
        .is_none_or(|ua| ua.trim().is_empty())
    {
        return Reply::error(
            403,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required).",
        );
    }
    if let Some(v) = req.header("x-github-api-version")
        && v != API_VERSION
    {
        return Reply::error(
            400,
            format!(
                "API version '{v}' is not supported. Supported versions: {API_VERSION}. See https://docs.github.com/rest/overview/api-versions"
            ),
        );
    }
    let trimmed = ctx.api_path.trim_start_matches('/');
    let segs: Vec<&str> = trimmed.split('/').collect();
    let Some(ep) = parse(&req.method, &segs) else {
        return Reply::not_found();
    };
    if let Ep::RunnerRegistration = ep {
        return super::actions::runner_registration(st, req, &ctx.web);
    }
    let auth_header = req.header("authorization");
    let cred = auth::classify(st, auth_header);
    match ep {
        Ep::RateLimit => match cred {
            Cred::Unknown => bad_credentials(),
            Cred::Installation(ref t) if expired_installation(st, t) => bad_credentials(),
            _ => rate_limit(st),
        },
        Ep::GetApp | Ep::CreateAccessToken(_) | Ep::GetInstallation(_) => {
            if let Err(r) = require_jwt(st, &cred) {
                return r;
            }
            match ep {
                Ep::GetApp => {
                    app_json(st, ctx).map_or_else(Reply::not_found, |v| Reply::json(200, v))
                }
                Ep::CreateAccessToken(id) => create_access_token(st, req, ctx, id),
                Ep::GetInstallation(t) => get_installation(st, ctx, t),
                _ => unreachable!(),
            }
        }
        Ep::RunnerRegistration => unreachable!("answered above"),
        Ep::Scoped(t, op) => {
            match &cred {
                Cred::None => return Reply::error(401, "Requires authentication"),
                Cred::Unknown => return bad_credentials(),
                Cred::Jwt(_) => {
                    return Reply::error(
                        403,
                        "A JSON web token can only be used on /app endpoints and to look up installations; use an installation access token",
                    );
                }
                Cred::Installation(t) if expired_installation(st, t) => return bad_credentials(),
                _ => {}
            }
            let Some(scope) = resolve(st, t) else {
                return Reply::not_found();
            };
            let access = if req.method == "GET" {
                Access::Read
            } else {
                Access::Write
            };
            let allowed = match &cred {
                Cred::Pat(i) => auth::pat_allows(&st.cfg.pats[*i].scopes, &scope)
                    .map_err(|d| (d, Some(st.cfg.pats[*i].scopes.join(", ")))),
                Cred::Installation(tok) => {
                    auth::installation_allows(st, tok, &scope, access).map_err(|d| (d, None))
                }
                _ => unreachable!("other credentials answered above"),
            };
            if let Err((denied, oauth_scopes)) = allowed {
                return match denied {
                    Denied::Hidden => Reply::not_found(),
                    Denied::Forbidden {
                        message,
                        accepted_scopes,
                    } => {
                        let mut r = Reply::error(403, message);
                        if let (Some(acc), Some(have)) = (accepted_scopes, oauth_scopes) {
                            r = r
                                .header("x-accepted-oauth-scopes", acc)
                                .header("x-oauth-scopes", have);
                        }
                        r
                    }
                };
            }
            scoped_op(st, req, ctx, &scope, op)
        }
    }
}

fn bad_credentials() -> Reply {
    Reply::error(401, "Bad credentials")
}

fn expired_installation(st: &State, token: &str) -> bool {
    st.installation_tokens
        .get(token)
        .is_none_or(|t| t.expires_at <= st.now())
}

fn require_jwt(st: &State, cred: &Cred) -> Result<(), Reply> {
    match cred {
        Cred::None => Err(Reply::error(401, "Requires authentication")),
        Cred::Jwt(token) => auth::verify_jwt(st, token).map_err(|m| Reply::error(401, m)),
        _ => Err(Reply::error(401, "A JSON web token could not be decoded")),
    }
}

fn scoped_op(st: &mut State, req: &Req, ctx: &Ctx, scope: &ScopeKey, op: Op<'_>) -> Reply {
    match op {
        Op::ListRunners => {
            let name = req.query_param("name");
            let runners: Vec<Value> = st
                .runners
                .values()
                .filter(|r| &r.scope == scope)
                .filter(|r| {
                    name.as_deref()
                        .is_none_or(|n| r.name.eq_ignore_ascii_case(n))
                })
                .map(|r| runner_json(st, r))
                .collect();
            paginated(req, ctx, "runners", runners)
        }
        Op::Downloads => Reply::json(200, downloads_json(st, ctx)),
        Op::Deprecation(v) => deprecation(st, v),
        Op::JitConfig => generate_jitconfig(st, req, ctx, scope),
        Op::RegistrationToken | Op::RemoveToken => {
            let kind = if matches!(op, Op::RegistrationToken) {
                RunnerTokenKind::Registration
            } else {
                RunnerTokenKind::Remove
            };
            let (token, expires_at) = st.issue_runner_token(scope.clone(), kind);
            Reply::json(
                201,
                json!({"token": token, "expires_at": rfc3339(expires_at)}),
            )
        }
        Op::GetRunner(id) => match st.runner_in(scope, id) {
            Some(r) => Reply::json(200, runner_json(st, r)),
            None => Reply::not_found(),
        },
        Op::DeleteRunner(id) => match st.runner_in(scope, id) {
            None => Reply::not_found(),
            Some(r) if r.busy => Reply::error(
                422,
                format!("Bad request - Runner \"{}\" is still running a job", r.name),
            ),
            Some(_) => {
                st.delete_runner(id);
                Reply::empty(204)
            }
        },
        Op::ListLabels(id) => with_runner(st, scope, id, |st, r| Ok(labels_json(st, &r.labels))),
        Op::AddLabels(id) => {
            let labels = match label_list(req, 1) {
                Ok(l) => l,
                Err(r) => return r,
            };
            with_runner_mut(st, scope, id, |r| {
                for l in labels {
                    if !r.labels.iter().any(|x| x.eq_ignore_ascii_case(&l)) {
                        r.labels.push(l);
                    }
                }
                Ok(())
            })
        }
        Op::SetLabels(id) => {
            let labels = match label_list(req, 0) {
                Ok(l) => l,
                Err(r) => return r,
            };
            with_runner_mut(st, scope, id, |r| {
                r.labels.retain(|l| is_read_only_label(l));
                for l in labels {
                    if !r.labels.iter().any(|x| x.eq_ignore_ascii_case(&l)) {
                        r.labels.push(l);
                    }
                }
                Ok(())
            })
        }
        Op::RemoveAllLabels(id) => with_runner_mut(st, scope, id, |r| {
            r.labels.retain(|l| is_read_only_label(l));
            Ok(())
        }),
        Op::RemoveLabel(id, name) => with_runner_mut(st, scope, id, |r| {
            let Some(i) = r.labels.iter().position(|l| l.eq_ignore_ascii_case(&name)) else {
                return Err(Reply::error(
                    404,
                    format!("Label {name} not found on this runner"),
                ));
            };
            if is_read_only_label(&r.labels[i]) {
                return Err(validation_simple(format!(
                    "Cannot remove read-only label {name}"
                )));
            }
            r.labels.remove(i);
            Ok(())
        }),
        Op::ListGroups => {
            let repo_filter = req.query_param("visible_to_repository");
            let org_filter = req.query_param("visible_to_organization");
            let groups: Vec<Value> = st
                .groups_of(scope)
                .iter()
                .filter(|g| {
                    group_visible(st, scope, g, repo_filter.as_deref(), org_filter.as_deref())
                })
                .map(|g| group_json(ctx, scope, g))
                .collect();
            paginated(req, ctx, "runner_groups", groups)
        }
        Op::CreateGroup => create_group(st, req, ctx, scope),
        Op::GetGroup(g) => match st.group(scope, g) {
            Some(g) => Reply::json(200, group_json(ctx, scope, g)),
            None => Reply::not_found(),
        },
        Op::UpdateGroup(g) => update_group(st, req, ctx, scope, g),
        Op::DeleteGroup(g) => match st.group(scope, g) {
            None => Reply::not_found(),
            Some(grp) if grp.default => {
                validation_simple("The default runner group cannot be deleted".to_string())
            }
            Some(_) => {
                st.delete_group(scope, g);
                Reply::empty(204)
            }
        },
        Op::ListGroupRunners(g) => {
            if st.group(scope, g).is_none() {
                return Reply::not_found();
            }
            let runners: Vec<Value> = st
                .runners
                .values()
                .filter(|r| &r.scope == scope && r.group_id == g)
                .map(|r| runner_json(st, r))
                .collect();
            paginated(req, ctx, "runners", runners)
        }
        Op::SetGroupRunners(g) => {
            if st.group(scope, g).is_none() {
                return Reply::not_found();
            }
            let Some(ids) = id_list(req, "runners") else {
                return validation_simple(
                    "Invalid request.\n\n\"runners\" wasn't supplied.".into(),
                );
            };
            if ids.iter().any(|id| st.runner_in(scope, *id).is_none()) {
                return Reply::not_found();
            }
            for r in st.runners.values_mut().filter(|r| &r.scope == scope) {
                if ids.contains(&r.id) {
                    r.group_id = g;
                } else if r.group_id == g {
                    r.group_id = 1;
                }
            }
            Reply::empty(204)
        }
        Op::AddGroupRunner(g, rid) => {
            if st.group(scope, g).is_none() {
                return Reply::not_found();
            }
            match st.runner_in_mut(scope, rid) {
                Some(r) => {
                    r.group_id = g;
                    Reply::empty(204)
                }
                None => Reply::not_found(),
            }
        }
        Op::RemoveGroupRunner(g, rid) => match st.runner_in_mut(scope, rid) {
            Some(r) if r.group_id == g && g != 1 => {
                r.group_id = 1;
                Reply::empty(204)
            }
            _ => Reply::not_found(),
        },
        Op::ListGroupAccess(g) => {
            let Some(grp) = st.group(scope, g) else {
                return Reply::not_found();
            };
            let (key, items): (&str, Vec<Value>) = match scope {
                ScopeKey::Org(org) => (
                    "repositories",
                    st.cfg
                        .repos
                        .iter()
                        .filter(|r| grp.selected_ids.contains(&r.id))
                        .filter_map(|r| {
                            let (o, n) = r.full_name.split_once('/')?;
                            o.eq_ignore_ascii_case(org)
                                .then(|| minimal_repo_json(st, ctx, o, n, r.id))
                        })
                        .collect(),
                ),
                _ => (
                    "organizations",
                    st.cfg
                        .orgs
                        .iter()
                        .filter(|o| grp.selected_ids.contains(&o.id))
                        .map(|o| org_simple_json(ctx, &o.login, o.id))
                        .collect(),
                ),
            };
            paginated(req, ctx, key, items)
        }
        Op::SetGroupAccess(g) => {
            let field = if matches!(scope, ScopeKey::Org(_)) {
                "selected_repository_ids"
            } else {
                "selected_organization_ids"
            };
            let Some(ids) = id_list(req, field) else {
                return validation_simple(format!(
                    "Invalid request.\n\n\"{field}\" wasn't supplied."
                ));
            };
            match st.group_mut(scope, g) {
                Some(grp) => {
                    grp.selected_ids = ids;
                    Reply::empty(204)
                }
                None => Reply::not_found(),
            }
        }
        Op::AddGroupAccess(g, id) | Op::RemoveGroupAccess(g, id) => {
            let add = matches!(op, Op::AddGroupAccess(..));
            let known = match scope {
                ScopeKey::Org(_) => st.cfg.repos.iter().any(|r| r.id == id),
                _ => st.cfg.orgs.iter().any(|o| o.id == id),
            };
            match st.group_mut(scope, g) {
                Some(grp) if known => {
                    grp.selected_ids.retain(|x| *x != id);
                    if add {
                        grp.selected_ids.push(id);
                    }
                    Reply::empty(204)
                }
                _ => Reply::not_found(),
            }
        }
    }
}

/// `validation-error-simple`: GitHub's 422 for the runner operations.
fn validation_simple(message: String) -> Reply {
    Reply::error(422, message)
}

fn with_runner(
    st: &State,
    scope: &ScopeKey,
    id: u64,
    f: impl FnOnce(&State, &Runner) -> Result<Value, Reply>,
) -> Reply {
    match st.runner_in(scope, id) {
        Some(r) => f(st, r).map_or_else(|e| e, |v| Reply::json(200, v)),
        None => Reply::not_found(),
    }
}

/// Changes a runner's labels and answers with all of them (`actions_runner_labels`).
fn with_runner_mut(
    st: &mut State,
    scope: &ScopeKey,
    id: u64,
    f: impl FnOnce(&mut Runner) -> Result<(), Reply>,
) -> Reply {
    let Some(r) = st.runner_in_mut(scope, id) else {
        return Reply::not_found();
    };
    if let Err(e) = f(r) {
        return e;
    }
    let labels = r.labels.clone();
    for l in &labels {
        st.label_id(l);
    }
    Reply::json(200, labels_json(st, &labels))
}

/// The `labels` array of a label request, with GitHub's bounds (`min`..=100 items).
fn label_list(req: &Req, min: usize) -> Result<Vec<String>, Reply> {
    let Some(body) = req.body_json() else {
        return Err(Reply::error(400, "Problems parsing JSON"));
    };
    let Some(arr) = body.get("labels").and_then(Value::as_array) else {
        return Err(validation_simple(
            "Invalid request.\n\n\"labels\" wasn't supplied.".into(),
        ));
    };
    let labels: Option<Vec<String>> = arr.iter().map(|v| v.as_str().map(str::to_string)).collect();
    match labels {
        Some(l) if l.len() >= min && l.len() <= 100 && l.iter().all(|s| !s.trim().is_empty()) => {
            Ok(l)
        }
        _ => Err(validation_simple(format!(
            "Invalid request.\n\n\"labels\" must hold {min} to 100 non-empty strings."
        ))),
    }
}

fn id_list(req: &Req, field: &str) -> Option<Vec<u64>> {
    req.body_json()?
        .get(field)?
        .as_array()?
        .iter()
        .map(Value::as_u64)
        .collect()
}

/// One page of `items` under `key`, with `total_count` and GitHub's `Link` header.
fn paginated(req: &Req, ctx: &Ctx, key: &str, items: Vec<Value>) -> Reply {
    let per_page = req
        .query_param("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(30)
        .min(100);
    let page = req
        .query_param("page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1);
    let total = items.len();
    let last = total.div_ceil(per_page).max(1);
    let slice: Vec<Value> = items
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .collect();
    let mut body = Map::new();
    body.insert("total_count".into(), json!(total));
    body.insert(key.into(), Value::Array(slice));
    let reply = Reply::json(200, Value::Object(body));
    match link_header(req, ctx, page, last) {
        Some(link) => reply.header("link", link),
        None => reply,
    }
}

/// `<url>; rel="prev", <url>; rel="next", <url>; rel="last", <url>; rel="first"`, as GitHub
/// orders them; no header when everything fits on one page.
fn link_header(req: &Req, ctx: &Ctx, page: usize, last: usize) -> Option<String> {
    if last <= 1 {
        return None;
    }
    let others: Vec<(String, String)> = req
        .query
        .as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k != "page")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let url = |p: usize| {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &others {
            s.append_pair(k, v);
        }
        s.append_pair("page", &p.to_string());
        format!("<{}{}?{}>", ctx.api, ctx.api_path, s.finish())
    };
    let mut parts = vec![];
    if page > 1 {
        parts.push(format!("{}; rel=\"prev\"", url((page - 1).min(last))));
    }
    if page < last {
        parts.push(format!("{}; rel=\"next\"", url(page + 1)));
        parts.push(format!("{}; rel=\"last\"", url(last)));
    }
    if page > 1 {
        parts.push(format!("{}; rel=\"first\"", url(1)));
    }
    Some(parts.join(", "))
}

fn runner_json(st: &State, r: &Runner) -> Value {
    let mut v = json!({
        "id": r.id,
        "name": r.name,
        "os": r.os,
        "status": r.status(),
        "busy": r.busy,
        "ephemeral": r.ephemeral,
        "runner_group_id": r.group_id,
        "labels": label_array(st, &r.labels),
    });
    // `version` is "only set if the runner has connected to the service at least once".
    if let Some(ver) = &r.version {
        v["version"] = json!(ver);
    }
    v
}

fn label_array(st: &State, labels: &[String]) -> Vec<Value> {
    labels
        .iter()
        .map(|l| {
            json!({
                "id": st.known_label_id(l),
                "name": l,
                "type": if is_read_only_label(l) { "read-only" } else { "custom" },
            })
        })
        .collect()
}

fn labels_json(st: &State, labels: &[String]) -> Value {
    json!({"total_count": labels.len(), "labels": label_array(st, labels)})
}

fn downloads_json(st: &State, ctx: &Ctx) -> Value {
    let ver = &st.cfg.runner_version;
    let apps: Vec<Value> = [
        ("osx", "x64"),
        ("osx", "arm64"),
        ("linux", "x64"),
        ("linux", "arm"),
        ("linux", "arm64"),
        ("win", "x64"),
        ("win", "arm64"),
    ]
    .iter()
    .map(|(os, arch)| {
        let ext = if *os == "win" { "zip" } else { "tar.gz" };
        let filename = format!("actions-runner-{os}-{arch}-{ver}.{ext}");
        // On the fake's own host (not served): nothing a test does may leave loopback.
        json!({
            "os": os,
            "architecture": arch,
            "download_url": format!("{}/actions/runner/releases/download/v{ver}/{filename}", ctx.web),
            "filename": filename,
        })
    })
    .collect();
    Value::Array(apps)
}

fn version_tuple(v: &str) -> Option<(u64, u64, u64)> {
    let mut it = v
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse::<u64>().ok());
    let t = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(t)
}

/// Whether runner version `v` is older than `min` (false when either does not parse).
pub(super) fn version_older(v: &str, min: &str) -> bool {
    matches!((version_tuple(v), version_tuple(min)), (Some(a), Some(b)) if a < b)
}

fn deprecation(st: &State, v: &str) -> Reply {
    let (Some(asked), Some(min)) = (version_tuple(v), version_tuple(&st.cfg.min_runner_version))
    else {
        return Reply::not_found();
    };
    let when = (asked < min).then(|| rfc3339(st.started_at - 86_400));
    Reply::json(
        200,
        json!({
            "runner_version": v,
            "registration_deprecates_at": when,
            "runtime_deprecates_at": when,
        }),
    )
}

fn generate_jitconfig(st: &mut State, req: &Req, ctx: &Ctx, scope: &ScopeKey) -> Reply {
    let Some(body) = req.body_json().filter(Value::is_object) else {
        return Reply::error(400, "Problems parsing JSON");
    };
    let mut problems = vec![];
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or("");
    if name.is_empty() {
        problems.push("\"name\" wasn't supplied.".to_string());
    }
    let group = body.get("runner_group_id").and_then(Value::as_u64);
    if group.is_none() {
        problems.push("\"runner_group_id\" wasn't supplied.".to_string());
    }
    let labels: Option<Vec<String>> = body
        .get("labels")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect());
    match &labels {
        None => problems.push("\"labels\" wasn't supplied.".to_string()),
        Some(l) if l.is_empty() || l.len() > 100 => {
            problems.push("\"labels\" must hold 1 to 100 items.".to_string())
        }
        _ => {}
    }
    let work_folder = match body.get("work_folder") {
        None | Some(Value::Null) => "_work".to_string(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => {
            problems.push("\"work_folder\" must be a non-empty string.".to_string());
            String::new()
        }
    };
    if !problems.is_empty() {
        return Reply::json(
            422,
            json!({
                "message": format!("Invalid request.\n\n{}", problems.join("\n")),
                "documentation_url": super::server::DOCS_URL,
                "errors": problems,
                "status": "422",
            }),
        );
    }
    let (group, labels) = (group.unwrap_or(1), labels.unwrap_or_default());
    if !st.group_exists(scope, group) {
        return Reply::error(404, format!("Runner group {group} not found"));
    }
    if st.runner_by_name(scope, name).is_some() {
        return Reply::error(
            409,
            format!("Already exists - A runner with the name {name} already exists."),
        );
    }
    let id = st.create_runner(scope.clone(), name, group, labels, true, true, &work_folder);
    let runner = &st.runners[&id];
    let encoded = runner_api::identity(st, runner, &ctx.web).encode();
    Reply::json(
        201,
        json!({"runner": runner_json(st, runner), "encoded_jit_config": encoded}),
    )
}

fn group_visible(
    st: &State,
    scope: &ScopeKey,
    g: &Group,
    repo: Option<&str>,
    org: Option<&str>,
) -> bool {
    let selected = |id: Option<u64>| {
        g.visibility != "selected" || id.is_some_and(|id| g.selected_ids.contains(&id))
    };
    match scope {
        ScopeKey::Org(o) => repo.is_none_or(|r| selected(st.repo_id(o, r))),
        ScopeKey::Ent(_) => org.is_none_or(|name| {
            selected(
                st.cfg
                    .orgs
                    .iter()
                    .find(|o| o.login.eq_ignore_ascii_case(name))
                    .map(|o| o.id),
            )
        }),
        ScopeKey::Repo { .. } => true,
    }
}

fn group_json(ctx: &Ctx, scope: &ScopeKey, g: &Group) -> Value {
    let base = format!("{}/{scope}/actions/runner-groups/{}", ctx.api, g.id);
    let mut v = json!({
        "id": g.id,
        "name": g.name,
        "visibility": g.visibility,
        "default": g.default,
        "runners_url": format!("{base}/runners"),
        "hosted_runners_url": format!("{base}/hosted-runners"),
        "allows_public_repositories": g.allows_public_repositories,
        "restricted_to_workflows": g.restricted_to_workflows,
        "selected_workflows": g.selected_workflows,
        "workflow_restrictions_read_only": false,
    });
    if let Some(n) = &g.network_configuration_id {
        v["network_configuration_id"] = json!(n);
    }
    match scope {
        ScopeKey::Org(_) => {
            v["inherited"] = json!(false);
            if g.visibility == "selected" {
                v["selected_repositories_url"] = json!(format!("{base}/repositories"));
            }
        }
        _ => {
            v["selected_organizations_url"] = json!(format!("{base}/organizations"));
        }
    }
    v
}

/// Applies the fields of a create or update body to a group; an invalid one is a 422.
fn apply_group_fields(g: &mut Group, body: &Value, scope: &ScopeKey) -> Result<(), Reply> {
    if let Some(name) = body.get("name") {
        match name.as_str().map(str::trim) {
            Some(n) if !n.is_empty() => g.name = n.to_string(),
            _ => {
                return Err(validation_simple(
                    "Invalid request.\n\n\"name\" must be a non-empty string.".into(),
                ));
            }
        }
    }
    if let Some(vis) = body.get("visibility") {
        let allowed: &[&str] = if matches!(scope, ScopeKey::Org(_)) {
            &["selected", "all", "private"]
        } else {
            &["selected", "all"]
        };
        match vis.as_str() {
            Some(v) if allowed.contains(&v) => g.visibility = v.to_string(),
            _ => {
                return Err(validation_simple(format!(
                    "Invalid request.\n\n\"visibility\" must be one of {}.",
                    allowed.join(", ")
                )));
            }
        }
    }
    let flag = |k: &str| body.get(k).and_then(Value::as_bool);
    if let Some(b) = flag("allows_public_repositories") {
        g.allows_public_repositories = b;
    }
    if let Some(b) = flag("restricted_to_workflows") {
        g.restricted_to_workflows = b;
    }
    if let Some(ws) = body.get("selected_workflows").and_then(Value::as_array) {
        g.selected_workflows = ws
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
    }
    match body.get("network_configuration_id") {
        Some(Value::String(s)) => g.network_configuration_id = Some(s.clone()),
        Some(Value::Null) => g.network_configuration_id = None,
        _ => {}
    }
    for key in ["selected_repository_ids", "selected_organization_ids"] {
        if let Some(ids) = body.get(key).and_then(Value::as_array) {
            g.selected_ids = ids.iter().filter_map(Value::as_u64).collect();
        }
    }
    Ok(())
}

fn create_group(st: &mut State, req: &Req, ctx: &Ctx, scope: &ScopeKey) -> Reply {
    let Some(body) = req.body_json().filter(Value::is_object) else {
        return Reply::error(400, "Problems parsing JSON");
    };
    let Some(name) = body
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
    else {
        return validation_simple("Invalid request.\n\n\"name\" wasn't supplied.".into());
    };
    if st
        .groups_of(scope)
        .iter()
        .any(|g| g.name.eq_ignore_ascii_case(name))
    {
        return Reply::error(409, format!("A runner group named {name} already exists"));
    }
    let mut draft = Group {
        id: 0,
        name: name.to_string(),
        visibility: "all".into(),
        default: false,
        allows_public_repositories: false,
        restricted_to_workflows: false,
        selected_workflows: vec![],
        selected_ids: vec![],
        network_configuration_id: None,
    };
    if let Err(r) = apply_group_fields(&mut draft, &body, scope) {
        return r;
    }
    let runner_ids = id_list(req, "runners").unwrap_or_default();
    if runner_ids
        .iter()
        .any(|id| st.runner_in(scope, *id).is_none())
    {
        return Reply::not_found();
    }
    let Some(g) = st.add_group(scope, name) else {
        return Reply::not_found();
    };
    let id = g.id;
    draft.id = id;
    *g = draft;
    for rid in runner_ids {
        if let Some(r) = st.runner_in_mut(scope, rid) {
            r.group_id = id;
        }
    }
    let g = st.group(scope, id).expect("just added");
    Reply::json(201, group_json(ctx, scope, g))
}

fn update_group(st: &mut State, req: &Req, ctx: &Ctx, scope: &ScopeKey, id: u64) -> Reply {
    let body = match req.body_json() {
        Some(b) if b.is_object() => b,
        None if req.body.is_empty() => json!({}),
        _ => return Reply::error(400, "Problems parsing JSON"),
    };
    if let Some(name) = body.get("name").and_then(Value::as_str)
        && st
            .groups_of(scope)
            .iter()
            .any(|g| g.id != id && g.name.eq_ignore_ascii_case(name.trim()))
    {
        return Reply::error(409, format!("A runner group named {name} already exists"));
    }
    let Some(g) = st.group_mut(scope, id) else {
        return Reply::not_found();
    };
    let mut draft = g.clone();
    if let Err(r) = apply_group_fields(&mut draft, &body, scope) {
        return r;
    }
    *g = draft;
    let g = st.group(scope, id).expect("exists");
    Reply::json(200, group_json(ctx, scope, g))
}

// --- the App ---

fn app_json(st: &State, ctx: &Ctx) -> Option<Value> {
    let app = st.cfg.app.as_ref()?;
    let owner = st
        .cfg
        .orgs
        .first()
        .map(|o| (o.login.clone(), o.id, "Organization"))
        .unwrap_or_else(|| ("octocat".into(), 1, "User"));
    Some(json!({
        "id": app.id,
        "slug": app.slug,
        "node_id": node_id("A", app.id),
        "client_id": app.client_id,
        "owner": simple_user_json(ctx, &owner.0, owner.1, owner.2),
        "name": app.name,
        "description": "The fake GitHub App of sysrunner's tests",
        "external_url": ctx.web,
        "html_url": format!("{}/apps/{}", ctx.web, app.slug),
        "created_at": rfc3339(st.started_at),
        "updated_at": rfc3339(st.started_at),
        "permissions": union_permissions(st),
        "events": [],
        "installations_count": app.installations.len(),
    }))
}

fn union_permissions(st: &State) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    for i in st.cfg.app.iter().flat_map(|a| &a.installations) {
        for (k, v) in &i.permissions {
            let e = all.entry(k.clone()).or_insert_with(|| v.clone());
            if v == "write" {
                *e = v.clone();
            }
        }
    }
    all
}

fn get_installation(st: &State, ctx: &Ctx, t: Target<'_>) -> Reply {
    let Some(scope) = resolve(st, t) else {
        return Reply::not_found();
    };
    let Some(app) = st.cfg.app.as_ref() else {
        return Reply::not_found();
    };
    let found = app.installations.iter().find(|i| match &scope {
        ScopeKey::Repo { owner, repo } => {
            i.account.eq_ignore_ascii_case(owner)
                && i.target_type != "Enterprise"
                && (i.repository_selection == "all"
                    || i.repositories.iter().any(|r| r.eq_ignore_ascii_case(repo)))
        }
        ScopeKey::Org(o) => i.account.eq_ignore_ascii_case(o) && i.target_type == "Organization",
        ScopeKey::Ent(e) => i.account.eq_ignore_ascii_case(e) && i.target_type == "Enterprise",
    });
    match found {
        Some(i) => Reply::json(200, installation_json(st, ctx, i.id)),
        None => Reply::not_found(),
    }
}

fn installation_json(st: &State, ctx: &Ctx, id: u64) -> Value {
    let app = st.cfg.app.as_ref().expect("an installation implies an App");
    let i = st.installation(id).expect("known installation");
    let (account, target_id) = if i.target_type == "Enterprise" {
        let e = st
            .cfg
            .enterprises
            .iter()
            .find(|e| e.slug.eq_ignore_ascii_case(&i.account));
        let eid = e.map_or(1, |e| e.id);
        (enterprise_json(st, ctx, &i.account, eid), eid)
    } else {
        let oid = st
            .cfg
            .orgs
            .iter()
            .find(|o| o.login.eq_ignore_ascii_case(&i.account))
            .map_or(1, |o| o.id);
        (simple_user_json(ctx, &i.account, oid, &i.target_type), oid)
    };
    let settings = if i.target_type == "Enterprise" {
        format!(
            "{}/enterprises/{}/settings/installations/{id}",
            ctx.web, i.account
        )
    } else {
        format!(
            "{}/organizations/{}/settings/installations/{id}",
            ctx.web, i.account
        )
    };
    json!({
        "id": id,
        "account": account,
        "repository_selection": i.repository_selection,
        "access_tokens_url": format!("{}/app/installations/{id}/access_tokens", ctx.api),
        "repositories_url": format!("{}/installation/repositories", ctx.api),
        "html_url": settings,
        "app_id": app.id,
        "client_id": app.client_id,
        "app_slug": app.slug,
        "target_id": target_id,
        "target_type": i.target_type,
        "permissions": i.permissions,
        "events": [],
        "created_at": rfc3339(st.started_at),
        "updated_at": rfc3339(st.started_at),
        "single_file_name": null,
        "has_multiple_single_files": false,
        "single_file_paths": [],
        "suspended_by": null,
        "suspended_at": null,
    })
}

fn create_access_token(st: &mut State, req: &Req, ctx: &Ctx, id: u64) -> Reply {
    let _ = ctx;
    let Some(inst) = st.installation(id).cloned() else {
        return Reply::not_found();
    };
    let body = match req.body_json() {
        Some(b) if b.is_object() => b,
        None if req.body.is_empty() => json!({}),
        _ => return Reply::error(400, "Problems parsing JSON"),
    };
    let validation = |message: &str, field: &str| {
        Reply::json(
            422,
            json!({
                "message": message,
                "documentation_url": super::server::DOCS_URL,
                "errors": [{"resource": "InstallationToken", "field": field, "code": "invalid"}],
                "status": "422",
            }),
        )
    };
    let mut permissions = inst.permissions.clone();
    if let Some(asked) = body.get("permissions") {
        let Some(asked) = asked.as_object() else {
            return validation(
                "The permissions requested are not granted to this installation.",
                "permissions",
            );
        };
        let mut granted = BTreeMap::new();
        for (k, v) in asked {
            let level = v.as_str().unwrap_or("");
            let ok = matches!(
                (inst.permissions.get(k).map(String::as_str), level),
                (Some("write"), "read" | "write") | (Some("read"), "read")
            );
            if !ok {
                return validation(
                    "The permissions requested are not granted to this installation.",
                    "permissions",
                );
            }
            granted.insert(k.clone(), level.to_string());
        }
        permissions = granted;
    }
    let mut repos: Option<Vec<String>> = None;
    let names = body.get("repositories").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect::<Vec<_>>()
    });
    let by_id = body
        .get("repository_ids")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_u64)
                .map(|rid| {
                    st.cfg
                        .repos
                        .iter()
                        .find(|r| r.id == rid)
                        .and_then(|r| r.full_name.split_once('/'))
                        .filter(|(o, _)| o.eq_ignore_ascii_case(&inst.account))
                        .map(|(_, n)| n.to_string())
                        .unwrap_or_else(|| format!("#{rid}"))
                })
                .collect::<Vec<_>>()
        });
    if names.is_some() || by_id.is_some() {
        let wanted: Vec<String> = names
            .into_iter()
            .flatten()
            .chain(by_id.into_iter().flatten())
            .collect();
        let accessible = |n: &str| {
            st.repo(&inst.account, n).is_some()
                && (inst.repository_selection == "all"
                    || inst.repositories.iter().any(|r| r.eq_ignore_ascii_case(n)))
        };
        if !wanted.iter().all(|n| accessible(n)) {
            return validation(
                "There is at least one repository that does not exist or is not accessible to the parent installation.",
                "repositories",
            );
        }
        repos = Some(wanted);
    }
    let selection = if repos.is_some() {
        "selected".to_string()
    } else {
        inst.repository_selection.clone()
    };
    let (token, expires_at) = st.issue_installation_token(id, permissions.clone(), repos);
    Reply::json(
        201,
        json!({
            "token": token,
            "expires_at": rfc3339(expires_at),
            "permissions": permissions,
            "repository_selection": selection,
        }),
    )
}

fn rate_limit(st: &State) -> Reply {
    let r = st.rate_info();
    let core =
        json!({"limit": r.limit, "remaining": r.remaining, "reset": r.reset, "used": r.used});
    let other =
        |limit: u64| json!({"limit": limit, "remaining": limit, "reset": r.reset, "used": 0});
    Reply::json(
        200,
        json!({
            "resources": {
                "core": core,
                "search": other(30),
                "graphql": other(5000),
                "actions_runner_registration": other(10_000),
            },
            "rate": core,
        }),
    )
}

// --- accounts and repositories ---

fn node_id(kind: &str, id: u64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("0{kind}{id}"))
}

fn simple_user_json(ctx: &Ctx, login: &str, id: u64, kind: &str) -> Value {
    let u = format!("{}/users/{login}", ctx.api);
    json!({
        "login": login,
        "id": id,
        "node_id": node_id("U", id),
        "avatar_url": format!("{}/avatars/{login}", ctx.web),
        "gravatar_id": "",
        "url": u,
        "html_url": format!("{}/{login}", ctx.web),
        "followers_url": format!("{u}/followers"),
        "following_url": format!("{u}/following{{/other_user}}"),
        "gists_url": format!("{u}/gists{{/gist_id}}"),
        "starred_url": format!("{u}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{u}/subscriptions"),
        "organizations_url": format!("{u}/orgs"),
        "repos_url": format!("{u}/repos"),
        "events_url": format!("{u}/events{{/privacy}}"),
        "received_events_url": format!("{u}/received_events"),
        "type": kind,
        "site_admin": false,
    })
}

fn enterprise_json(st: &State, ctx: &Ctx, slug: &str, id: u64) -> Value {
    json!({
        "id": id,
        "node_id": node_id("E", id),
        "name": slug,
        "slug": slug,
        "description": null,
        "website_url": null,
        "html_url": format!("{}/enterprises/{slug}", ctx.web),
        "created_at": rfc3339(st.started_at),
        "updated_at": rfc3339(st.started_at),
        "avatar_url": format!("{}/avatars/{slug}", ctx.web),
    })
}

fn org_simple_json(ctx: &Ctx, login: &str, id: u64) -> Value {
    let u = format!("{}/orgs/{login}", ctx.api);
    json!({
        "login": login,
        "id": id,
        "node_id": node_id("O", id),
        "url": u,
        "repos_url": format!("{u}/repos"),
        "events_url": format!("{u}/events"),
        "hooks_url": format!("{u}/hooks"),
        "issues_url": format!("{u}/issues"),
        "members_url": format!("{u}/members{{/member}}"),
        "public_members_url": format!("{u}/public_members{{/member}}"),
        "avatar_url": format!("{}/avatars/{login}", ctx.web),
        "description": null,
    })
}

fn minimal_repo_json(st: &State, ctx: &Ctx, owner: &str, name: &str, id: u64) -> Value {
    let u = format!("{}/repos/{owner}/{name}", ctx.api);
    let (owner_id, kind) = st
        .cfg
        .orgs
        .iter()
        .find(|o| o.login.eq_ignore_ascii_case(owner))
        .map_or((1, "User"), |o| (o.id, "Organization"));
    let mut v = json!({
        "id": id,
        "node_id": node_id("R", id),
        "name": name,
        "full_name": format!("{owner}/{name}"),
        "owner": simple_user_json(ctx, owner, owner_id, if st.is_org(owner) { kind } else { "User" }),
        "private": true,
        "html_url": format!("{}/{owner}/{name}", ctx.web),
        "description": null,
        "fork": false,
        "url": u,
    });
    let templated = [
        ("archive_url", "/{archive_format}{/ref}"),
        ("assignees_url", "/assignees{/user}"),
        ("blobs_url", "/git/blobs{/sha}"),
        ("branches_url", "/branches{/branch}"),
        ("collaborators_url", "/collaborators{/collaborator}"),
        ("comments_url", "/comments{/number}"),
        ("commits_url", "/commits{/sha}"),
        ("compare_url", "/compare/{base}...{head}"),
        ("contents_url", "/contents/{+path}"),
        ("contributors_url", "/contributors"),
        ("deployments_url", "/deployments"),
        ("downloads_url", "/downloads"),
        ("events_url", "/events"),
        ("forks_url", "/forks"),
        ("git_commits_url", "/git/commits{/sha}"),
        ("git_refs_url", "/git/refs{/sha}"),
        ("git_tags_url", "/git/tags{/sha}"),
        ("hooks_url", "/hooks"),
        ("issue_comment_url", "/issues/comments{/number}"),
        ("issue_events_url", "/issues/events{/number}"),
        ("issues_url", "/issues{/number}"),
        ("keys_url", "/keys{/key_id}"),
        ("labels_url", "/labels{/name}"),
        ("languages_url", "/languages"),
        ("merges_url", "/merges"),
        ("milestones_url", "/milestones{/number}"),
        (
            "notifications_url",
            "/notifications{?since,all,participating}",
        ),
        ("pulls_url", "/pulls{/number}"),
        ("releases_url", "/releases{/id}"),
        ("stargazers_url", "/stargazers"),
        ("statuses_url", "/statuses/{sha}"),
        ("subscribers_url", "/subscribers"),
        ("subscription_url", "/subscription"),
        ("tags_url", "/tags"),
        ("teams_url", "/teams"),
        ("trees_url", "/git/trees{/sha}"),
    ];
    for (k, suffix) in templated {
        v[k] = json!(format!("{u}{suffix}"));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_operations() {
        let p = |m: &str, path: &str| {
            let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            parse(m, &segs).map(|e| format!("{e:?}"))
        };
        assert!(
            p("GET", "/repos/o/r/actions/runners/downloads")
                .unwrap()
                .contains("Downloads")
        );
        assert!(
            p("GET", "/repos/o/r/actions/runners/7")
                .unwrap()
                .contains("GetRunner(7)")
        );
        assert!(p("GET", "/repos/o/r/actions/runners/x").is_none());
        assert!(
            p("GET", "/repos/o/r/actions/runner-groups").is_none(),
            "repos have no groups"
        );
        assert!(p("GET", "/orgs/o/actions/runner-groups/2/repositories").is_some());
        assert!(p("GET", "/orgs/o/actions/runner-groups/2/organizations").is_none());
        assert!(
            p(
                "GET",
                "/enterprises/e/actions/runner-groups/2/organizations"
            )
            .is_some()
        );
        assert!(
            p("DELETE", "/orgs/o/actions/runners/3/labels/gpu%20x")
                .unwrap()
                .contains("\"gpu x\"")
        );
        assert!(p("PATCH", "/orgs/o/actions/runners/3").is_none());
        assert!(p("GET", "/enterprises/e/installation").is_some());
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_tuple("2.99.0") < version_tuple("2.329.0"));
        assert_eq!(version_tuple("v2.336.0"), Some((2, 336, 0)));
        assert_eq!(version_tuple("2.336"), None);
    }
}
