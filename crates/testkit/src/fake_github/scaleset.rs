//! What the Actions service remembers: admin tokens, runner scale sets, their message sessions
//! and queues, and how a scale set's jobs move (available, acquired, started, completed) with the
//! statistics that follow from them. Plain data and pure steps, no I/O; the HTTP side is
//! `actions`. Jobs and runners themselves stay `state`'s: this module adds the scale set's view
//! (messages, statistics) to their changes and never removes a job.

use super::state::{ALNUM, HEX, ScopeKey, State, random_text};
use super::time::rfc3339;
use super::wire::{Job, JobResult, JobStatus, ScaleSetStatistics};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The message type every queue message has (`RunnerScaleSetJobMessages`); another is an error
/// to the client.
pub(crate) const MESSAGE_TYPE: &str = "RunnerScaleSetJobMessages";

/// GitHub's queue puts at most this many job messages in one message (actions/scaleset README).
const MAX_EVENTS_PER_MESSAGE: usize = 50;

/// An admin token: the JWT `POST …/actions/runner-registration` hands out, good for one scope.
#[derive(Debug, Clone)]
pub(crate) struct AdminToken {
    pub scope: ScopeKey,
    pub expires_at: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub id: String,
    pub owner_name: String,
    pub queue_token: String,
    pub queue_token_expires_at: i64,
    /// The last queue poll, refresh or creation (the fake's clock).
    pub last_seen: i64,
}

/// A sealed queue message: the job events it carries, fixed once handed out.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub id: u64,
    pub events: Vec<Value>,
}

#[derive(Debug, Clone)]
pub(crate) struct ScaleSet {
    pub id: u64,
    pub scope: ScopeKey,
    pub name: String,
    pub group_id: u64,
    /// `(name, type)`; never empty: a scale set created without labels carries its name.
    pub labels: Vec<(String, String)>,
    /// `RunnerSetting` as the client sent it (`disableUpdate` always present).
    pub runner_setting: Value,
    pub created_on: i64,
    pub session: Option<Session>,
    /// Handed out (or sealed) and not deleted, oldest first.
    pub messages: Vec<Message>,
    /// Job events not yet in a message; the next poll seals them into one.
    pub pending: Vec<Value>,
    /// Jobs this scale set was told about with `JobAvailable`.
    pub offered: BTreeSet<u64>,
    pub last_max_capacity: Option<u64>,
}

impl ScaleSet {
    /// A job's `runs-on` labels are all among this scale set's label names or its name.
    pub(crate) fn covers(&self, labels: &[String]) -> bool {
        !labels.is_empty()
            && labels.iter().all(|l| {
                self.name.eq_ignore_ascii_case(l)
                    || self.labels.iter().any(|(n, _)| n.eq_ignore_ascii_case(l))
            })
    }

    /// The session, unless it expired (`idle` seconds without a poll or refresh).
    pub(crate) fn live_session(&self, now: i64, idle: u64) -> Option<&Session> {
        self.session
            .as_ref()
            .filter(|s| s.last_seen + idle as i64 > now)
    }

    fn has_available_event(&self, request_id: u64) -> bool {
        let is_it = |e: &Value| {
            e["messageType"] == "JobAvailable" && e["runnerRequestId"].as_u64() == Some(request_id)
        };
        self.pending.iter().any(is_it) || self.messages.iter().any(|m| m.events.iter().any(is_it))
    }
}

/// Times a scale set's job shows in its messages.
#[derive(Debug, Clone, Default)]
pub(crate) struct JobTimes {
    pub queued: i64,
    pub scale_set_assigned: Option<i64>,
    pub runner_assigned: Option<i64>,
    pub finished: Option<i64>,
}

pub(crate) struct Actions {
    /// The fake's web URL (`http://ADDR`), known once it listens: the Actions-service URLs start with it.
    pub web_url: String,
    pub admin_tokens: HashMap<String, AdminToken>,
    /// Signs the admin JWTs (HS256). Clients do not verify them; the fake looks tokens up.
    secret: String,
    pub scale_sets: BTreeMap<u64, ScaleSet>,
    next_scale_set_id: u64,
    next_message_id: u64,
    next_request_id: u64,
    pub job_times: BTreeMap<u64, JobTimes>,
}

impl Actions {
    pub(crate) fn new() -> Actions {
        Actions {
            web_url: String::new(),
            admin_tokens: HashMap::new(),
            secret: random_text(32, ALNUM),
            scale_sets: BTreeMap::new(),
            next_scale_set_id: 1,
            next_message_id: 1,
            // Distinct from job ids, so a client that mixes the two is caught.
            next_request_id: 1001,
            job_times: BTreeMap::new(),
        }
    }

    /// A 3-part JWT (HS256) with `exp`, good for `scope` until `expires_at`.
    pub(crate) fn issue_admin_token(
        &mut self,
        scope: ScopeKey,
        now: i64,
        expires_at: i64,
        service_url: &str,
    ) -> String {
        let claims = json!({
            "iss": "sysrunner-fake-github",
            "aud": service_url,
            "scp": "Actions.Service",
            "scope": scope.to_string(),
            "jti": random_text(16, HEX),
            "iat": now,
            "nbf": now,
            "exp": expires_at,
        });
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(self.secret.as_bytes()),
        )
        .expect("HS256 signing of a JSON object cannot fail");
        self.admin_tokens
            .insert(token.clone(), AdminToken { scope, expires_at });
        token
    }

    pub(crate) fn next_scale_set_id(&mut self) -> u64 {
        let id = self.next_scale_set_id;
        self.next_scale_set_id += 1;
        id
    }

    fn next_request_id(&mut self) -> u64 {
        let id = self.next_request_id;
        self.next_request_id += 1;
        id
    }

    /// The scale set and session a queue token belongs to, if it is current and its session live.
    pub(crate) fn queue_token_owner(&self, token: &str, now: i64, idle: u64) -> Option<u64> {
        self.scale_sets.values().find_map(|ss| {
            let s = ss.live_session(now, idle)?;
            (s.queue_token == token && s.queue_token_expires_at > now).then_some(ss.id)
        })
    }

    /// The oldest message with an id above `last`; pending events are sealed into a new one when
    /// no such message is waiting.
    pub(crate) fn next_message(&mut self, ss_id: u64, last: u64) -> Option<Message> {
        let ss = self.scale_sets.get_mut(&ss_id)?;
        if let Some(m) = ss.messages.iter().find(|m| m.id > last) {
            return Some(m.clone());
        }
        if ss.pending.is_empty() {
            return None;
        }
        let n = ss.pending.len().min(MAX_EVENTS_PER_MESSAGE);
        let events: Vec<Value> = ss.pending.drain(..n).collect();
        let m = Message {
            id: self.next_message_id,
            events,
        };
        self.next_message_id += 1;
        ss.messages.push(m.clone());
        Some(m)
    }

    /// A scope's Actions-service base URL, ending in `/`: `<web>/_actions/orgs/o/`.
    pub(crate) fn service_url(&self, scope: &ScopeKey) -> String {
        format!("{}{}", self.web_url, service_url_path(scope))
    }

    pub(crate) fn runner_assigned(&mut self, job_id: u64, now: i64) {
        if let Some(t) = self.job_times.get_mut(&job_id) {
            t.runner_assigned = Some(now);
        }
    }
}

/// Where a job's repository is: its scope's repository, else the first configured repository of
/// the owner (or of any owner for an enterprise).
fn repository(st: &State, scope: &ScopeKey) -> (String, String) {
    let first = |owner: Option<&str>| {
        st.cfg
            .repos
            .iter()
            .filter_map(|r| r.full_name.split_once('/'))
            .find(|(o, _)| owner.is_none_or(|w| o.eq_ignore_ascii_case(w)))
            .map(|(o, n)| (o.to_string(), n.to_string()))
    };
    match scope {
        ScopeKey::Repo { owner, repo } => (owner.clone(), repo.clone()),
        ScopeKey::Org(o) => first(Some(o)).unwrap_or_else(|| (o.clone(), String::new())),
        ScopeKey::Ent(e) => first(None).unwrap_or_else(|| (e.clone(), String::new())),
    }
}

fn result_word(r: JobResult) -> &'static str {
    match r {
        JobResult::Succeeded => "succeeded",
        JobResult::Failed => "failed",
        JobResult::Canceled => "canceled",
    }
}

impl State {
    /// Gives a just-queued labelled job its `runnerRequestId` and offers it to the scale sets
    /// that cover its labels.
    pub(crate) fn queue_scale_set_job(&mut self, job_id: u64) -> Job {
        let request_id = self.actions.next_request_id();
        let now = self.now();
        self.actions.job_times.insert(
            job_id,
            JobTimes {
                queued: now,
                ..JobTimes::default()
            },
        );
        let job = self.jobs.get_mut(&job_id).expect("just queued");
        job.runner_request_id = Some(request_id);
        let job = job.clone();
        self.offer_jobs();
        job
    }

    /// Whether scale set `ss` may take `job`: a labelled job, its labels covered, its scope (if
    /// it names one) the scale set's.
    fn scale_set_matches(&self, ss: &ScaleSet, job: &Job) -> bool {
        job.runner_request_id.is_some()
            && ss.covers(&job.labels)
            && job
                .scope
                .as_deref()
                .is_none_or(|s| self.scope_from_str(s).as_ref() == Some(&ss.scope))
    }

    /// Available: queued, labelled, acquired by no scale set.
    fn available(job: &Job) -> bool {
        job.status == JobStatus::Queued
            && job.runner_request_id.is_some()
            && job.scale_set_id.is_none()
    }

    /// Every available job goes, once, as `JobAvailable` to every scale set that matches it.
    pub(crate) fn offer_jobs(&mut self) {
        let mut offers: Vec<(u64, u64)> = vec![];
        for ss in self.actions.scale_sets.values() {
            for job in self.jobs.values() {
                if Self::available(job)
                    && !ss.offered.contains(&job.id)
                    && self.scale_set_matches(ss, job)
                {
                    offers.push((ss.id, job.id));
                }
            }
        }
        for (ss_id, job_id) in offers {
            let event = self.job_event("JobAvailable", ss_id, job_id);
            if let Some(ss) = self.actions.scale_sets.get_mut(&ss_id) {
                ss.offered.insert(job_id);
                ss.pending.push(event);
            }
        }
    }

    /// A new session: available jobs whose `JobAvailable` was already deleted are offered again,
    /// so a listener that restarts learns of the jobs still waiting.
    pub(crate) fn reoffer_jobs(&mut self, ss_id: u64) {
        let Some(ss) = self.actions.scale_sets.get(&ss_id) else {
            return;
        };
        let forget: Vec<u64> = ss
            .offered
            .iter()
            .copied()
            .filter(|j| {
                self.jobs.get(j).is_some_and(|job| {
                    Self::available(job)
                        && !job
                            .runner_request_id
                            .is_some_and(|r| ss.has_available_event(r))
                })
            })
            .collect();
        if let Some(ss) = self.actions.scale_sets.get_mut(&ss_id) {
            for j in forget {
                ss.offered.remove(&j);
            }
        }
        self.offer_jobs();
    }

    /// The job message (`JobMessageBase` plus the type's own fields) for `job_id` as scale set
    /// `ss_id` sees it now.
    pub(crate) fn job_event(&self, kind: &str, ss_id: u64, job_id: u64) -> Value {
        let job = &self.jobs[&job_id];
        let ss = &self.actions.scale_sets[&ss_id];
        let scope = job
            .scope
            .as_deref()
            .and_then(|s| self.scope_from_str(s))
            .unwrap_or_else(|| ss.scope.clone());
        let (owner, repo) = repository(self, &scope);
        let times = self
            .actions
            .job_times
            .get(&job_id)
            .cloned()
            .unwrap_or_default();
        let time = |t: Option<i64>| t.map_or(Value::Null, |t| json!(rfc3339(t)));
        let mut v = json!({
            "messageType": kind,
            "runnerRequestId": job.runner_request_id,
            "repositoryName": repo,
            "ownerName": owner,
            "jobId": job.id.to_string(),
            "jobWorkflowRef": format!("{owner}/{repo}/.github/workflows/ci.yml@refs/heads/main"),
            "jobDisplayName": job.name,
            "workflowRunId": 100_000 + job.id,
            "eventName": "push",
            "requestLabels": job.labels,
            "queueTime": rfc3339(times.queued),
            "scaleSetAssignTime": time(times.scale_set_assigned),
            "runnerAssignTime": time(times.runner_assigned),
            "finishTime": time(times.finished),
        });
        if kind == "JobAvailable" {
            v["acquireJobUrl"] = json!(format!(
                "{}_apis/runtime/runnerscalesets/{ss_id}/acquirejobs",
                self.actions.service_url(&ss.scope)
            ));
        }
        if let Some(r) = job.runner_id.and_then(|id| self.runners.get(&id))
            && matches!(kind, "JobStarted" | "JobCompleted")
        {
            v["runnerId"] = json!(r.id);
            v["runnerName"] = json!(r.name);
        }
        if kind == "JobCompleted" {
            v["result"] = json!(job.result.map(result_word).unwrap_or("canceled"));
        }
        v
    }

    /// `acquirejobs`: the available jobs among `request_ids` this scale set matches become its
    /// own (`JobAssigned` follows); ids it already holds are answered again, for a retry.
    pub(crate) fn acquire_jobs(&mut self, ss_id: u64, request_ids: &[u64]) -> Vec<u64> {
        let now = self.now();
        let mut acquired = vec![];
        for rid in request_ids {
            let Some(job_id) = self
                .jobs
                .values()
                .find(|j| j.runner_request_id == Some(*rid))
                .map(|j| j.id)
            else {
                continue;
            };
            let job = &self.jobs[&job_id];
            if job.scale_set_id == Some(ss_id) && job.status != JobStatus::Completed {
                acquired.push(*rid);
                continue;
            }
            let ss = &self.actions.scale_sets[&ss_id];
            if !(Self::available(job) && self.scale_set_matches(ss, job)) {
                continue;
            }
            if let Some(j) = self.jobs.get_mut(&job_id) {
                j.scale_set_id = Some(ss_id);
            }
            if let Some(t) = self.actions.job_times.get_mut(&job_id) {
                t.scale_set_assigned = Some(now);
            }
            let event = self.job_event("JobAssigned", ss_id, job_id);
            if let Some(ss) = self.actions.scale_sets.get_mut(&ss_id) {
                ss.pending.push(event);
            }
            acquired.push(*rid);
        }
        acquired
    }

    pub(crate) fn scale_set_job_started(&mut self, runner_id: u64, job_id: u64) {
        let Some(ss_id) = self.scale_set_of_job(runner_id, job_id) else {
            return;
        };
        let event = self.job_event("JobStarted", ss_id, job_id);
        if let Some(ss) = self.actions.scale_sets.get_mut(&ss_id) {
            ss.pending.push(event);
        }
    }

    pub(crate) fn scale_set_job_completed(&mut self, runner_id: u64, job_id: u64) {
        let Some(ss_id) = self.scale_set_of_job(runner_id, job_id) else {
            return;
        };
        let now = self.now();
        if let Some(t) = self.actions.job_times.get_mut(&job_id) {
            t.finished = Some(now);
        }
        let event = self.job_event("JobCompleted", ss_id, job_id);
        if let Some(ss) = self.actions.scale_sets.get_mut(&ss_id) {
            ss.pending.push(event);
        }
    }

    /// The scale set that acquired `job_id`, when a runner of that scale set holds it.
    fn scale_set_of_job(&self, runner_id: u64, job_id: u64) -> Option<u64> {
        let ss = self.jobs.get(&job_id)?.scale_set_id?;
        let r = self.runners.get(&runner_id)?;
        (r.scale_set == Some(ss) && self.actions.scale_sets.contains_key(&ss)).then_some(ss)
    }

    pub(crate) fn scale_set_statistics(&self, ss_id: u64) -> ScaleSetStatistics {
        let Some(ss) = self.actions.scale_sets.get(&ss_id) else {
            return ScaleSetStatistics::default();
        };
        let mut s = ScaleSetStatistics::default();
        for job in self.jobs.values() {
            if Self::available(job) && self.scale_set_matches(ss, job) {
                s.total_available_jobs += 1;
            }
            if job.scale_set_id == Some(ss_id) {
                match job.status {
                    JobStatus::Queued | JobStatus::Assigned => s.total_acquired_jobs += 1,
                    JobStatus::InProgress => s.total_running_jobs += 1,
                    JobStatus::Completed => {}
                }
            }
        }
        s.total_assigned_jobs = s.total_acquired_jobs + s.total_running_jobs;
        for r in self.runners.values().filter(|r| r.scale_set == Some(ss_id)) {
            s.total_registered_runners += 1;
            if r.busy {
                s.total_busy_runners += 1;
            }
        }
        s.total_idle_runners = s.total_registered_runners - s.total_busy_runners;
        s
    }

    /// Deletes a scale set: its session and queue go, its runners are removed, and the jobs it
    /// acquired that no runner started become available to the other scale sets.
    pub(crate) fn delete_scale_set(&mut self, ss_id: u64) -> bool {
        if self.actions.scale_sets.remove(&ss_id).is_none() {
            return false;
        }
        let runners: Vec<u64> = self
            .runners
            .values()
            .filter(|r| r.scale_set == Some(ss_id))
            .map(|r| r.id)
            .collect();
        for id in runners {
            self.delete_runner(id);
        }
        let released: Vec<u64> = self
            .jobs
            .values()
            .filter(|j| j.scale_set_id == Some(ss_id) && j.status == JobStatus::Queued)
            .map(|j| j.id)
            .collect();
        for id in &released {
            if let Some(j) = self.jobs.get_mut(id) {
                j.scale_set_id = None;
            }
            if let Some(t) = self.actions.job_times.get_mut(id) {
                t.scale_set_assigned = None;
                t.runner_assigned = None;
            }
            for ss in self.actions.scale_sets.values_mut() {
                ss.offered.remove(id);
            }
        }
        self.offer_jobs();
        true
    }
}

/// The path of a scope's Actions-service base URL (after the fake's web URL), ending in `/`.
pub(crate) fn service_url_path(scope: &ScopeKey) -> String {
    format!("/_actions/{scope}/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_github::config::FakeConfig;
    use crate::fake_github::wire::JobSpec;

    fn scale_set(st: &mut State, name: &str, labels: &[&str]) -> u64 {
        let id = st.actions.next_scale_set_id();
        let scope = st.org("octo-org").unwrap();
        st.actions.scale_sets.insert(
            id,
            ScaleSet {
                id,
                scope,
                name: name.into(),
                group_id: 1,
                labels: labels
                    .iter()
                    .map(|l| (l.to_string(), "System".to_string()))
                    .collect(),
                runner_setting: json!({"disableUpdate": true}),
                created_on: 0,
                session: None,
                messages: vec![],
                pending: vec![],
                offered: BTreeSet::new(),
                last_max_capacity: None,
            },
        );
        st.offer_jobs();
        id
    }

    fn queue(st: &mut State, labels: &[&str]) -> Job {
        st.queue_job(JobSpec {
            name: "build".into(),
            steps: vec!["true".into()],
            labels: labels.iter().map(|l| l.to_string()).collect(),
            ..JobSpec::default()
        })
    }

    fn kinds(events: &[Value]) -> Vec<&str> {
        events
            .iter()
            .map(|e| e["messageType"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn a_job_goes_through_its_scale_set_and_the_statistics_add_up() {
        let mut st = State::new(FakeConfig::default()).unwrap();
        let ss = scale_set(&mut st, "arc", &["arc"]);
        let job = queue(&mut st, &["ARC"]);
        let rid = job.runner_request_id.unwrap();
        let stats = st.scale_set_statistics(ss);
        assert_eq!(
            (stats.total_available_jobs, stats.total_assigned_jobs),
            (1, 0)
        );
        let m = st.actions.next_message(ss, 0).unwrap();
        assert_eq!(kinds(&m.events), ["JobAvailable"]);
        assert_eq!(m.events[0]["runnerRequestId"], rid);
        assert_eq!(m.events[0]["jobId"], job.id.to_string());
        assert_eq!(m.events[0]["repositoryName"], "octo-repo");
        assert_eq!(st.acquire_jobs(ss, &[rid, 999_999]), [rid]);
        let stats = st.scale_set_statistics(ss);
        assert_eq!(
            (
                stats.total_available_jobs,
                stats.total_acquired_jobs,
                stats.total_assigned_jobs
            ),
            (0, 1, 1)
        );
        let scope = st.org("octo-org").unwrap();
        let r = st.create_runner(
            scope,
            "runner-1",
            1,
            vec!["arc".into()],
            true,
            true,
            "_work",
        );
        st.runners.get_mut(&r).unwrap().scale_set = Some(ss);
        assert_eq!(st.assign_job(r).unwrap().id, job.id);
        st.start_job(r, job.id);
        let stats = st.scale_set_statistics(ss);
        assert_eq!(
            (
                stats.total_acquired_jobs,
                stats.total_running_jobs,
                stats.total_assigned_jobs,
                stats.total_busy_runners,
                stats.total_idle_runners
            ),
            (0, 1, 1, 1, 0)
        );
        st.complete_job(r, job.id, JobResult::Failed, String::new());
        assert!(st.runners.is_empty(), "ephemeral: gone with its job");
        // JobAvailable still unacked (id 1 was not deleted); the rest comes as one message.
        let m2 = st.actions.next_message(ss, 1).unwrap();
        assert_eq!(
            kinds(&m2.events),
            ["JobAssigned", "JobStarted", "JobCompleted"]
        );
        assert_eq!(m2.events[1]["runnerName"], "runner-1");
        assert_eq!(m2.events[2]["result"], "failed");
        assert_eq!(m2.events[2]["runnerId"], r);
        assert_eq!(st.scale_set_statistics(ss), ScaleSetStatistics::default());
    }

    #[test]
    fn scale_sets_with_the_same_labels_share_a_job_and_the_first_acquire_wins() {
        let mut st = State::new(FakeConfig::default()).unwrap();
        let a = scale_set(&mut st, "a", &["gpu", "linux"]);
        let b = scale_set(&mut st, "b", &["gpu"]);
        let other = scale_set(&mut st, "c", &["cpu"]);
        let rid = queue(&mut st, &["gpu"]).runner_request_id.unwrap();
        assert!(st.actions.next_message(other, 0).is_none());
        assert_eq!(st.scale_set_statistics(b).total_available_jobs, 1);
        assert_eq!(st.acquire_jobs(b, &[rid]), [rid]);
        assert_eq!(st.acquire_jobs(a, &[rid]), Vec::<u64>::new());
        assert_eq!(
            st.acquire_jobs(b, &[rid]),
            [rid],
            "a retry is answered again"
        );
        assert_eq!(st.scale_set_statistics(a).total_available_jobs, 0);
        // Its acquirer goes away before a runner started it: the job is the others' again.
        assert!(st.delete_scale_set(b));
        assert_eq!(st.scale_set_statistics(a).total_available_jobs, 1);
        assert_eq!(st.acquire_jobs(a, &[rid]), [rid]);
    }

    #[test]
    fn a_job_whose_labels_a_scale_set_lacks_is_not_offered_to_it() {
        let mut st = State::new(FakeConfig::default()).unwrap();
        let ss = scale_set(&mut st, "arc", &["arc"]);
        queue(&mut st, &["arc", "gpu"]);
        assert!(st.actions.next_message(ss, 0).is_none());
        assert_eq!(st.scale_set_statistics(ss).total_available_jobs, 0);
        // A scale set created later with the labels gets the waiting job.
        let gpu = scale_set(&mut st, "gpu-set", &["arc", "gpu"]);
        assert_eq!(
            kinds(&st.actions.next_message(gpu, 0).unwrap().events),
            ["JobAvailable"]
        );
    }
}
