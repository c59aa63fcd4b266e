//! The control API (`/_fake/control/…`) for tests and the demo: queue jobs and read their results,
//! read the request log, see and steer runners (and make one run its job), see the runner scale
//! sets with their sessions and statistics, inject faults, advance the clock. Its own requests
//! are not logged and never faulted.

use super::server::{Reply, Req, Shared};
use super::state::State;
use super::wire::{
    AdvanceClock, FaultRule, Info, JobSpec, JobStatus, NewRunner, RunJob, ScaleSetSessionState,
    ScaleSetState, SetRunnerState,
};
use serde::Serialize;
use serde_json::Value;

fn ok<T: Serialize>(status: u16, v: &T) -> Reply {
    Reply::json(status, serde_json::to_value(v).unwrap_or(Value::Null))
}

fn body<T: serde::de::DeserializeOwned>(req: &Req) -> Result<T, Reply> {
    serde_json::from_slice(&req.body)
        .map_err(|e| Reply::error(400, format!("Problems parsing JSON: {e}")))
}

macro_rules! try_reply {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

pub(crate) async fn handle(shared: &Shared, req: &Req) -> Reply {
    let reply = dispatch(shared, req);
    // Queued jobs, state changes and a moved clock may concern a waiting long poll.
    shared.changed.notify_waiters();
    reply
}

fn dispatch(shared: &Shared, req: &Req) -> Reply {
    let sub = req
        .path
        .trim_start_matches("/_fake/control")
        .trim_matches('/');
    let segs: Vec<&str> = if sub.is_empty() {
        vec![]
    } else {
        sub.split('/').collect()
    };
    let mut st = shared.lock();
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["info"]) => ok(
            200,
            &Info {
                web_url: shared.web_url.clone(),
                api_url: format!("{}{}", shared.web_url, st.cfg.base_path),
                now: st.now(),
            },
        ),
        ("POST", ["jobs"]) => {
            let spec: JobSpec = try_reply!(body(req));
            match (spec.runner_name.trim().is_empty(), spec.labels.is_empty()) {
                (true, true) => {
                    return Reply::error(
                        422,
                        "runner_name (a named runner's job) or labels (a scale set's job) is required",
                    );
                }
                (false, false) => {
                    return Reply::error(
                        422,
                        "runner_name and labels: give one (a named runner's job or a scale set's job), not both",
                    );
                }
                _ => {}
            }
            if let Some(s) = &spec.scope
                && st.scope_from_str(s).is_none()
            {
                return Reply::error(
                    404,
                    format!("unknown scope {s:?} (expected repos/O/R, orgs/O or enterprises/E)"),
                );
            }
            ok(201, &st.queue_job(spec))
        }
        ("GET", ["jobs"]) => ok(200, &st.jobs.values().collect::<Vec<_>>()),
        ("GET", ["jobs", id]) => match id.parse::<u64>().ok().and_then(|id| st.jobs.get(&id)) {
            Some(j) => ok(200, j),
            None => Reply::error(404, format!("no job {id}")),
        },
        ("GET", ["requests"]) => {
            let since = req
                .query_param("since")
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            ok(
                200,
                &st.log.iter().filter(|r| r.seq > since).collect::<Vec<_>>(),
            )
        }
        ("DELETE", ["requests"]) => {
            st.log.clear();
            Reply::empty(204)
        }
        ("GET", ["runners"]) => ok(
            200,
            &st.runners
                .values()
                .map(|r| st.runner_state(r))
                .collect::<Vec<_>>(),
        ),
        ("POST", ["runners"]) => {
            let new: NewRunner = try_reply!(body(req));
            let Some(scope) = st.scope_from_str(&new.scope) else {
                return Reply::error(404, format!("unknown scope {:?}", new.scope));
            };
            if st.runner_by_name(&scope, &new.name).is_some() {
                return Reply::error(
                    409,
                    format!("a runner named {} exists in {scope}", new.name),
                );
            }
            let group = new.runner_group_id.unwrap_or(1);
            if !st.group_exists(&scope, group) {
                return Reply::error(404, format!("no runner group {group} in {scope}"));
            }
            let id = st.create_runner(
                scope,
                &new.name,
                group,
                new.labels,
                new.ephemeral,
                false,
                "_work",
            );
            ok(201, &st.runner_state(&st.runners[&id]))
        }
        ("POST", ["runners", id, "state"]) => {
            let set: SetRunnerState = try_reply!(body(req));
            let Some(r) = id
                .parse::<u64>()
                .ok()
                .and_then(|id| st.runners.get_mut(&id))
            else {
                return Reply::error(404, format!("no runner {id}"));
            };
            match set.status.as_deref() {
                None => {}
                Some("online") => {
                    if r.session.is_none() {
                        r.session = Some("control".into());
                    }
                    if r.os == "unknown" {
                        r.os = "Linux".into();
                    }
                }
                Some("offline") => r.session = None,
                Some(other) => {
                    return Reply::error(
                        422,
                        format!("status {other:?}: expected online or offline"),
                    );
                }
            }
            if let Some(b) = set.busy {
                r.busy = b;
            }
            let r = r.clone();
            ok(200, &st.runner_state(&r))
        }
        ("POST", ["runners", id, "run"]) => {
            let run: RunJob = if req.body.is_empty() {
                RunJob::default()
            } else {
                try_reply!(body(req))
            };
            let Some(id) = id
                .parse::<u64>()
                .ok()
                .filter(|id| st.runners.contains_key(id))
            else {
                return Reply::error(404, format!("no runner {id}"));
            };
            run_job(&mut st, id, run)
        }
        ("GET", ["scalesets"]) => {
            let list: Vec<ScaleSetState> = st
                .actions
                .scale_sets
                .keys()
                .map(|id| scale_set_state(&st, *id))
                .collect();
            ok(200, &list)
        }
        ("GET", ["faults"]) => ok(200, &st.faults().to_vec()),
        ("POST", ["faults"]) => {
            let rule: FaultRule = try_reply!(body(req));
            if rule.count == 0 {
                return Reply::error(422, "count must be at least 1");
            }
            let id = st.add_fault(rule);
            ok(201, &serde_json::json!({ "id": id }))
        }
        ("DELETE", ["faults"]) => {
            st.clear_faults();
            Reply::empty(204)
        }
        ("POST", ["clock"]) => {
            let adv: AdvanceClock = try_reply!(body(req));
            st.advance_clock(adv.secs);
            ok(
                200,
                &Info {
                    web_url: shared.web_url.clone(),
                    api_url: format!("{}{}", shared.web_url, st.cfg.base_path),
                    now: st.now(),
                },
            )
        }
        _ => Reply::error(
            404,
            format!("no control endpoint {} {}", req.method, req.path),
        ),
    }
}

/// The runner takes its next job (the one it holds, else what `jobs/next` would give it), starts
/// and completes it: "the runner ran", without a runner process.
fn run_job(st: &mut State, runner_id: u64, run: RunJob) -> Reply {
    let held = st.runners[&runner_id]
        .job
        .and_then(|j| st.jobs.get(&j))
        .filter(|j| j.status != JobStatus::Completed)
        .map(|j| j.id);
    let Some(job_id) = held.or_else(|| st.assign_job(runner_id).map(|j| j.id)) else {
        return Reply::error(409, format!("runner {runner_id} has no job to run"));
    };
    if st.jobs[&job_id].status != JobStatus::InProgress {
        st.start_job(runner_id, job_id);
    }
    st.complete_job(runner_id, job_id, run.result, run.output);
    ok(200, &st.jobs[&job_id])
}

fn scale_set_state(st: &State, id: u64) -> ScaleSetState {
    let ss = &st.actions.scale_sets[&id];
    let now = st.now();
    let idle = st.cfg.actions_session_idle_secs;
    ScaleSetState {
        id,
        name: ss.name.clone(),
        scope: ss.scope.to_string(),
        actions_url: st.actions.service_url(&ss.scope),
        runner_group_id: ss.group_id,
        labels: ss.labels.iter().map(|(n, _)| n.clone()).collect(),
        statistics: st.scale_set_statistics(id),
        session: ss.session.as_ref().map(|s| ScaleSetSessionState {
            session_id: s.id.clone(),
            owner_name: s.owner_name.clone(),
            expires_at: s.last_seen + idle as i64,
            queue_token_expires_at: s.queue_token_expires_at,
            live: ss.live_session(now, idle).is_some(),
        }),
        unacked_messages: ss.messages.iter().map(|m| m.id).collect(),
        pending_events: ss.pending.len(),
        last_max_capacity: ss.last_max_capacity,
    }
}
