//! Everything the fake remembers: scopes, runners, groups, tokens, jobs, faults, the request log and
//! the clock, and (in `actions`, kept by `scaleset`) the Actions service's scale sets. Plain data
//! behind one mutex; the protocol modules read and change it, this module keeps its invariants
//! (names unique per scope, ids never reused, expired tokens refused).

use super::config::{AppConfig, FakeConfig, InstallationConfig};
use super::time::system_now;
use super::wire::{
    Fault, FaultRule, FaultState, Job, JobResult, JobSpec, JobStatus, RequestRecord, RunnerState,
};
use rand::Rng;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// A place runners belong to. Names keep the configured spelling; lookups ignore case, as GitHub's do.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ScopeKey {
    Repo { owner: String, repo: String },
    Org(String),
    Ent(String),
}

impl fmt::Display for ScopeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeKey::Repo { owner, repo } => write!(f, "repos/{owner}/{repo}"),
            ScopeKey::Org(o) => write!(f, "orgs/{o}"),
            ScopeKey::Ent(e) => write!(f, "enterprises/{e}"),
        }
    }
}

impl ScopeKey {
    /// The scope's web path, as runners get it in `gitHubUrl`: `/o/r`, `/o`, `/enterprises/e`.
    pub(crate) fn web_path(&self) -> String {
        match self {
            ScopeKey::Repo { owner, repo } => format!("/{owner}/{repo}"),
            ScopeKey::Org(o) => format!("/{o}"),
            ScopeKey::Ent(e) => format!("/enterprises/{e}"),
        }
    }

    /// Repositories have no runner groups of their own: only `Default` (id 1).
    pub(crate) fn has_groups(&self) -> bool {
        !matches!(self, ScopeKey::Repo { .. })
    }
}

/// Labels GitHub applies itself and marks `read-only`; any other label is `custom`.
const READ_ONLY_LABELS: [&str; 7] = [
    "self-hosted",
    "linux",
    "windows",
    "macos",
    "x64",
    "arm",
    "arm64",
];

pub(crate) fn is_read_only_label(name: &str) -> bool {
    READ_ONLY_LABELS.contains(&name.to_lowercase().as_str())
}

#[derive(Debug, Clone)]
pub(crate) struct Runner {
    pub id: u64,
    pub name: String,
    pub scope: ScopeKey,
    pub group_id: u64,
    pub labels: Vec<String>,
    /// `unknown` until the runner opens a session.
    pub os: String,
    pub version: Option<String>,
    pub busy: bool,
    pub ephemeral: bool,
    pub jit: bool,
    pub work_folder: String,
    /// `.credentials` `clientId`.
    pub client_id: String,
    /// The runner's secret (`.credentials_rsaparams` `fakeRunnerSecret`), its bearer token.
    pub secret: String,
    pub session: Option<String>,
    /// When the runner's listener was last heard from (the fake's clock, epoch seconds).
    pub last_seen: i64,
    pub job: Option<u64>,
    /// The runner scale set whose JIT config made it (it then takes only that set's jobs).
    pub scale_set: Option<u64>,
}

impl Runner {
    pub(crate) fn online(&self) -> bool {
        self.session.is_some()
    }

    pub(crate) fn status(&self) -> &'static str {
        if self.online() { "online" } else { "offline" }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub id: u64,
    pub name: String,
    pub visibility: String,
    pub default: bool,
    pub allows_public_repositories: bool,
    pub restricted_to_workflows: bool,
    pub selected_workflows: Vec<String>,
    /// Repository ids (org groups) or organization ids (enterprise groups) when `selected`.
    pub selected_ids: Vec<u64>,
    pub network_configuration_id: Option<String>,
}

impl Group {
    fn new(id: u64, name: &str) -> Group {
        Group {
            id,
            name: name.to_string(),
            visibility: "all".into(),
            default: id == 1,
            allows_public_repositories: false,
            restricted_to_workflows: false,
            selected_workflows: vec![],
            selected_ids: vec![],
            network_configuration_id: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunnerTokenKind {
    Registration,
    Remove,
}

#[derive(Debug, Clone)]
pub(crate) struct RunnerToken {
    pub scope: ScopeKey,
    pub kind: RunnerTokenKind,
    pub expires_at: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct InstallationToken {
    pub installation_id: u64,
    pub permissions: BTreeMap<String, String>,
    /// Restricted to these repository names, when the token request named some.
    pub repositories: Option<Vec<String>>,
    pub expires_at: i64,
}

/// What the next request's `x-ratelimit-*` headers say.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateInfo {
    pub limit: u64,
    pub remaining: u64,
    pub reset: i64,
    pub used: u64,
}

pub(crate) struct State {
    pub cfg: FakeConfig,
    /// Seconds added to the system clock (`POST /_fake/control/clock`).
    clock_offset: i64,
    pub started_at: i64,
    pub app_key: Option<jsonwebtoken::DecodingKey>,
    next_runner_id: u64,
    pub runners: BTreeMap<u64, Runner>,
    /// Runner groups of organizations and enterprises; `Default` is id 1 in each.
    pub groups: BTreeMap<ScopeKey, Vec<Group>>,
    next_group_id: BTreeMap<ScopeKey, u64>,
    label_ids: BTreeMap<String, u64>,
    pub runner_tokens: HashMap<String, RunnerToken>,
    pub installation_tokens: HashMap<String, InstallationToken>,
    pub jobs: BTreeMap<u64, Job>,
    next_job_id: u64,
    pub log: Vec<RequestRecord>,
    next_seq: u64,
    faults: Vec<FaultState>,
    next_fault_id: u64,
    rate_used: u64,
    rate_reset: i64,
    /// The Actions service: admin tokens, runner scale sets, sessions, message queues.
    pub actions: super::scaleset::Actions,
}

/// Random text from `alphabet`, for tokens and secrets.
pub(crate) fn random_text(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

pub(crate) const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
pub(crate) const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
pub(crate) const HEX: &[u8] = b"0123456789abcdef";

impl State {
    pub(crate) fn new(cfg: FakeConfig) -> Result<State, super::FakeError> {
        cfg.check()?;
        let app_key = match &cfg.app {
            Some(AppConfig { public_key_pem, .. }) => Some(
                jsonwebtoken::DecodingKey::from_rsa_pem(public_key_pem.as_bytes()).map_err(
                    |e| {
                        super::FakeError::Config(format!(
                            "app.public_key_pem: not an RSA public key: {e}"
                        ))
                    },
                )?,
            ),
            None => None,
        };
        let mut groups = BTreeMap::new();
        let mut next_group_id = BTreeMap::new();
        let accounts = cfg
            .orgs
            .iter()
            .map(|o| (ScopeKey::Org(o.login.clone()), &o.runner_groups))
            .chain(
                cfg.enterprises
                    .iter()
                    .map(|e| (ScopeKey::Ent(e.slug.clone()), &e.runner_groups)),
            );
        for (key, names) in accounts {
            let mut list = vec![Group::new(1, "Default")];
            for name in names {
                list.push(Group::new(list.len() as u64 + 1, name));
            }
            next_group_id.insert(key.clone(), list.len() as u64 + 1);
            groups.insert(key, list);
        }
        let now = system_now();
        Ok(State {
            cfg,
            clock_offset: 0,
            started_at: now,
            app_key,
            next_runner_id: 1,
            runners: BTreeMap::new(),
            groups,
            next_group_id,
            label_ids: BTreeMap::new(),
            runner_tokens: HashMap::new(),
            installation_tokens: HashMap::new(),
            jobs: BTreeMap::new(),
            next_job_id: 1,
            log: Vec::new(),
            next_seq: 1,
            faults: Vec::new(),
            next_fault_id: 1,
            rate_used: 0,
            rate_reset: now + 3600,
            actions: super::scaleset::Actions::new(),
        })
    }

    /// The fake's clock: the system clock plus what the control API advanced it by.
    pub(crate) fn now(&self) -> i64 {
        system_now() + self.clock_offset
    }

    pub(crate) fn advance_clock(&mut self, secs: u64) {
        self.clock_offset += secs as i64;
    }

    // --- scopes ---

    pub(crate) fn repo(&self, owner: &str, repo: &str) -> Option<ScopeKey> {
        let full = format!("{owner}/{repo}").to_lowercase();
        self.cfg
            .repos
            .iter()
            .find(|r| r.full_name.to_lowercase() == full)
            .and_then(|r| r.full_name.split_once('/'))
            .map(|(o, n)| ScopeKey::Repo {
                owner: o.to_string(),
                repo: n.to_string(),
            })
    }

    pub(crate) fn org(&self, login: &str) -> Option<ScopeKey> {
        self.cfg
            .orgs
            .iter()
            .find(|o| o.login.eq_ignore_ascii_case(login))
            .map(|o| ScopeKey::Org(o.login.clone()))
    }

    pub(crate) fn enterprise(&self, slug: &str) -> Option<ScopeKey> {
        self.cfg
            .enterprises
            .iter()
            .find(|e| e.slug.eq_ignore_ascii_case(slug))
            .map(|e| ScopeKey::Ent(e.slug.clone()))
    }

    /// `repos/o/r`, `orgs/o` or `enterprises/e` (the control API's spelling of a scope).
    pub(crate) fn scope_from_str(&self, s: &str) -> Option<ScopeKey> {
        let parts: Vec<&str> = s.trim_matches('/').split('/').collect();
        match parts.as_slice() {
            ["repos", o, r] => self.repo(o, r),
            ["orgs", o] => self.org(o),
            ["enterprises", e] => self.enterprise(e),
            _ => None,
        }
    }

    /// A scope from the path of its web URL: `/o/r`, `/o` or `/enterprises/e`.
    pub(crate) fn scope_from_web_path(&self, path: &str) -> Option<ScopeKey> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match parts.as_slice() {
            ["enterprises", e] => self.enterprise(e),
            [o, r] => self.repo(o, r),
            [o] => self.org(o),
            _ => None,
        }
    }

    pub(crate) fn repo_id(&self, owner: &str, repo: &str) -> Option<u64> {
        let full = format!("{owner}/{repo}").to_lowercase();
        self.cfg
            .repos
            .iter()
            .find(|r| r.full_name.to_lowercase() == full)
            .map(|r| r.id)
    }

    pub(crate) fn is_org(&self, login: &str) -> bool {
        self.org(login).is_some()
    }

    // --- runners ---

    pub(crate) fn label_id(&mut self, name: &str) -> u64 {
        let next = self.label_ids.len() as u64 + 1;
        *self.label_ids.entry(name.to_lowercase()).or_insert(next)
    }

    /// The id of a label already seen (every label enters through `label_id`); 0 if none.
    pub(crate) fn known_label_id(&self, name: &str) -> u64 {
        self.label_ids
            .get(&name.to_lowercase())
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn runner_by_name(&self, scope: &ScopeKey, name: &str) -> Option<&Runner> {
        self.runners
            .values()
            .find(|r| &r.scope == scope && r.name.eq_ignore_ascii_case(name))
    }

    pub(crate) fn runner_in(&self, scope: &ScopeKey, id: u64) -> Option<&Runner> {
        self.runners.get(&id).filter(|r| &r.scope == scope)
    }

    pub(crate) fn runner_in_mut(&mut self, scope: &ScopeKey, id: u64) -> Option<&mut Runner> {
        self.runners.get_mut(&id).filter(|r| &r.scope == scope)
    }

    pub(crate) fn runner_by_secret(&self, secret: &str) -> Option<&Runner> {
        self.runners.values().find(|r| r.secret == secret)
    }

    /// A new offline runner. The caller has checked that the name is free in the scope.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create_runner(
        &mut self,
        scope: ScopeKey,
        name: &str,
        group_id: u64,
        labels: Vec<String>,
        ephemeral: bool,
        jit: bool,
        work_folder: &str,
    ) -> u64 {
        let id = self.next_runner_id;
        self.next_runner_id += 1;
        let now = self.now();
        for l in &labels {
            self.label_id(l);
        }
        self.runners.insert(
            id,
            Runner {
                id,
                name: name.to_string(),
                scope,
                group_id,
                labels,
                os: "unknown".into(),
                version: None,
                busy: false,
                ephemeral,
                jit,
                work_folder: work_folder.to_string(),
                client_id: format!(
                    "{}-{}-{}-{}-{}",
                    random_text(8, HEX),
                    random_text(4, HEX),
                    random_text(4, HEX),
                    random_text(4, HEX),
                    random_text(12, HEX)
                ),
                secret: random_text(40, HEX),
                session: None,
                last_seen: now,
                job: None,
                scale_set: None,
            },
        );
        id
    }

    /// The runner's listener was heard from now.
    pub(crate) fn touch_runner(&mut self, id: u64) {
        let now = self.now();
        if let Some(r) = self.runners.get_mut(&id) {
            r.last_seen = now;
        }
    }

    /// Runners not heard from for `runner_session_idle_secs` go offline, as GitHub shows a runner
    /// whose process died; a job one held (assigned or running) fails, as GitHub fails a job whose
    /// runner lost communication (one handed out but not started goes back to the queue). The
    /// runner itself stays registered (offline, not busy), for its
    /// owner to delete. Returns the runners that went offline.
    pub(crate) fn lapse_runner_sessions(&mut self) -> Vec<u64> {
        let now = self.now();
        let idle = self.cfg.runner_session_idle_secs as i64;
        let lapsed: Vec<u64> = self
            .runners
            .values()
            .filter(|r| {
                r.session.as_deref().is_some_and(|s| s != "control") && r.last_seen + idle <= now
            })
            .map(|r| r.id)
            .collect();
        for &id in &lapsed {
            let job = match self.runners.get_mut(&id) {
                Some(r) => {
                    r.session = None;
                    r.busy = false;
                    r.job.take()
                }
                None => None,
            };
            let Some(job_id) = job else { continue };
            let name = self.runners[&id].name.clone();
            if let Some(j) = self.jobs.get_mut(&job_id)
                && j.status == JobStatus::Assigned
            {
                // Handed out but never started: it goes back to the queue (a scale set's job
                // stays its acquirer's), as when the runner is deleted.
                j.status = JobStatus::Queued;
                j.runner_id = None;
                continue;
            }
            if let Some(j) = self.jobs.get_mut(&job_id) {
                j.status = JobStatus::Completed;
                j.result = Some(JobResult::Failed);
                j.output = format!(
                    "The self-hosted runner: {name} lost communication with the server. Verify the machine is running and has a healthy network connection."
                );
            }
            self.scale_set_job_completed(id, job_id);
        }
        lapsed
    }

    /// Removes a runner; a job it held goes back to the queue unless it had started.
    pub(crate) fn delete_runner(&mut self, id: u64) -> Option<Runner> {
        let r = self.runners.remove(&id)?;
        if let Some(job) = r.job.and_then(|j| self.jobs.get_mut(&j))
            && job.status == JobStatus::Assigned
        {
            // A scale set's job stays its acquirer's, waiting for another of its runners.
            job.status = JobStatus::Queued;
            job.runner_id = None;
            if let Some(t) = self.actions.job_times.get_mut(&job.id) {
                t.runner_assigned = None;
            }
        }
        Some(r)
    }

    pub(crate) fn runner_state(&self, r: &Runner) -> RunnerState {
        RunnerState {
            id: r.id,
            name: r.name.clone(),
            scope: r.scope.to_string(),
            runner_group_id: r.group_id,
            status: r.status().into(),
            busy: r.busy,
            ephemeral: r.ephemeral,
            jit: r.jit,
            os: r.os.clone(),
            version: r.version.clone(),
            labels: r.labels.clone(),
            work_folder: r.work_folder.clone(),
            session: r.session.clone(),
            job: r.job,
            scale_set_id: r.scale_set,
        }
    }

    // --- groups ---

    pub(crate) fn groups_of(&self, scope: &ScopeKey) -> &[Group] {
        self.groups.get(scope).map(Vec::as_slice).unwrap_or(&[])
    }

    pub(crate) fn group(&self, scope: &ScopeKey, id: u64) -> Option<&Group> {
        self.groups_of(scope).iter().find(|g| g.id == id)
    }

    pub(crate) fn group_mut(&mut self, scope: &ScopeKey, id: u64) -> Option<&mut Group> {
        self.groups.get_mut(scope)?.iter_mut().find(|g| g.id == id)
    }

    /// Whether a runner may join group `id` of its scope (repositories: only 1).
    pub(crate) fn group_exists(&self, scope: &ScopeKey, id: u64) -> bool {
        if scope.has_groups() {
            self.group(scope, id).is_some()
        } else {
            id == 1
        }
    }

    pub(crate) fn add_group(&mut self, scope: &ScopeKey, name: &str) -> Option<&mut Group> {
        let next = self.next_group_id.get_mut(scope)?;
        let id = *next;
        *next += 1;
        let list = self.groups.get_mut(scope)?;
        list.push(Group::new(id, name));
        list.last_mut()
    }

    /// Deletes a non-default group; its runners move to `Default`.
    pub(crate) fn delete_group(&mut self, scope: &ScopeKey, id: u64) -> bool {
        let Some(list) = self.groups.get_mut(scope) else {
            return false;
        };
        let before = list.len();
        list.retain(|g| g.id != id || g.default);
        if list.len() == before {
            return false;
        }
        for r in self.runners.values_mut() {
            if &r.scope == scope && r.group_id == id {
                r.group_id = 1;
            }
        }
        true
    }

    // --- tokens ---

    pub(crate) fn issue_runner_token(
        &mut self,
        scope: ScopeKey,
        kind: RunnerTokenKind,
    ) -> (String, i64) {
        // GitHub's registration tokens are 29 upper-case letters and digits.
        let token = random_text(29, UPPER_ALNUM);
        let expires_at = self.now() + self.cfg.runner_token_ttl_secs as i64;
        self.runner_tokens.insert(
            token.clone(),
            RunnerToken {
                scope,
                kind,
                expires_at,
            },
        );
        (token, expires_at)
    }

    /// A registration or remove token that is still valid.
    pub(crate) fn runner_token(&self, token: &str, kind: RunnerTokenKind) -> Option<&RunnerToken> {
        self.runner_tokens
            .get(token)
            .filter(|t| t.kind == kind && t.expires_at > self.now())
    }

    pub(crate) fn installation(&self, id: u64) -> Option<&InstallationConfig> {
        self.cfg
            .app
            .as_ref()?
            .installations
            .iter()
            .find(|i| i.id == id)
    }

    pub(crate) fn issue_installation_token(
        &mut self,
        installation_id: u64,
        permissions: BTreeMap<String, String>,
        repositories: Option<Vec<String>>,
    ) -> (String, i64) {
        let token = format!("ghs_{}", random_text(36, ALNUM));
        let expires_at = self.now() + self.cfg.installation_token_ttl_secs as i64;
        self.installation_tokens.insert(
            token.clone(),
            InstallationToken {
                installation_id,
                permissions,
                repositories,
                expires_at,
            },
        );
        (token, expires_at)
    }

    // --- jobs ---

    pub(crate) fn queue_job(&mut self, spec: JobSpec) -> Job {
        let for_scale_sets = !spec.labels.is_empty();
        let job = Job {
            id: self.next_job_id,
            runner_name: spec.runner_name,
            name: spec.name,
            steps: spec.steps,
            scope: spec.scope,
            status: JobStatus::Queued,
            result: None,
            output: String::new(),
            runner_id: None,
            labels: spec.labels,
            runner_request_id: None,
            scale_set_id: None,
        };
        self.next_job_id += 1;
        self.jobs.insert(job.id, job.clone());
        if for_scale_sets {
            return self.queue_scale_set_job(job.id);
        }
        job
    }

    /// Hands the oldest queued job for this runner's name (and scope) to it; a scale set's
    /// runner gets the oldest job its scale set acquired that no runner holds.
    pub(crate) fn assign_job(&mut self, runner_id: u64) -> Option<Job> {
        let r = self.runners.get(&runner_id)?;
        if r.job.is_some() {
            return None;
        }
        let scope = r.scope.to_string();
        let name = r.name.to_lowercase();
        let scale_set = r.scale_set;
        let job = self.jobs.values_mut().find(|j| {
            j.status == JobStatus::Queued
                && match scale_set {
                    Some(ss) => j.scale_set_id == Some(ss),
                    None => {
                        !j.runner_name.is_empty()
                            && j.runner_name.to_lowercase() == name
                            && j.scope
                                .as_deref()
                                .is_none_or(|s| s.trim_matches('/').eq_ignore_ascii_case(&scope))
                    }
                }
        })?;
        job.status = JobStatus::Assigned;
        job.runner_id = Some(runner_id);
        let job = job.clone();
        if let Some(r) = self.runners.get_mut(&runner_id) {
            r.job = Some(job.id);
        }
        if scale_set.is_some() {
            self.actions.runner_assigned(job.id, self.now());
        }
        Some(job)
    }

    /// The runner has started the job it holds: it is busy; a scale set hears `JobStarted`.
    pub(crate) fn start_job(&mut self, runner_id: u64, job_id: u64) {
        if let Some(j) = self.jobs.get_mut(&job_id) {
            j.status = JobStatus::InProgress;
        }
        if let Some(r) = self.runners.get_mut(&runner_id) {
            r.busy = true;
        }
        self.scale_set_job_started(runner_id, job_id);
    }

    /// Ends a job; an ephemeral runner is removed with it.
    pub(crate) fn complete_job(
        &mut self,
        runner_id: u64,
        job_id: u64,
        result: JobResult,
        output: String,
    ) {
        if let Some(job) = self.jobs.get_mut(&job_id) {
            job.status = JobStatus::Completed;
            job.result = Some(result);
            job.output = output;
        }
        // Told while the runner still exists: the message names it.
        self.scale_set_job_completed(runner_id, job_id);
        let ephemeral = match self.runners.get_mut(&runner_id) {
            Some(r) => {
                r.busy = false;
                r.job = None;
                r.ephemeral
            }
            None => false,
        };
        if ephemeral {
            self.runners.remove(&runner_id);
        }
    }

    // --- faults ---

    pub(crate) fn add_fault(&mut self, rule: FaultRule) -> u64 {
        let id = self.next_fault_id;
        self.next_fault_id += 1;
        self.faults.push(FaultState {
            id,
            remaining: rule.count,
            rule,
        });
        id
    }

    pub(crate) fn faults(&self) -> &[FaultState] {
        &self.faults
    }

    pub(crate) fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// The first live rule matching this request uses up one of its count.
    pub(crate) fn take_fault(&mut self, method: &str, path: &str) -> Option<(u64, Fault)> {
        let f = self.faults.iter_mut().find(|f| {
            f.remaining > 0
                && (f.rule.method == "*" || f.rule.method.eq_ignore_ascii_case(method))
                && wildcard_match(&f.rule.path, path)
        })?;
        f.remaining -= 1;
        let taken = (f.id, f.rule.fault.clone());
        self.faults.retain(|f| f.remaining > 0);
        Some(taken)
    }

    // --- log and rate limit ---

    pub(crate) fn next_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    pub(crate) fn push_log(&mut self, rec: RequestRecord) {
        self.log.push(rec);
    }

    /// Counts one request against the core limit (a new hour starts a new window).
    pub(crate) fn count_request(&mut self) -> RateInfo {
        let now = self.now();
        if now >= self.rate_reset {
            self.rate_reset = now + 3600;
            self.rate_used = 0;
        }
        self.rate_used += 1;
        self.rate_info()
    }

    pub(crate) fn rate_info(&self) -> RateInfo {
        let limit = self.cfg.rate_limit;
        RateInfo {
            limit,
            remaining: limit.saturating_sub(self.rate_used),
            reset: self.rate_reset,
            used: self.rate_used,
        }
    }
}

/// `*` matches any run of characters (`/` included); everything else matches itself.
pub(crate) fn wildcard_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_any_run_including_slashes() {
        assert!(wildcard_match("*", "/repos/a/b"));
        assert!(wildcard_match(
            "*/actions/runners/generate-jitconfig",
            "/repos/a/b/actions/runners/generate-jitconfig"
        ));
        assert!(wildcard_match(
            "/orgs/*/runners*",
            "/orgs/o/actions/runners/5"
        ));
        assert!(!wildcard_match(
            "/orgs/*/runners",
            "/orgs/o/actions/runners/5"
        ));
        assert!(wildcard_match("/a/b", "/a/b"));
        assert!(!wildcard_match("/a/*b*c", "/a/cb"));
        assert!(!wildcard_match("ab*ba", "aba"));
    }

    #[test]
    fn ephemeral_runner_goes_with_its_job_and_ids_are_not_reused() {
        let mut st = State::new(FakeConfig::default()).unwrap();
        let scope = st.org("OCTO-ORG").unwrap();
        let id = st.create_runner(
            scope.clone(),
            "r1",
            1,
            vec!["x".into()],
            true,
            true,
            "_work",
        );
        st.queue_job(JobSpec {
            runner_name: "R1".into(),
            name: "build".into(),
            steps: vec!["true".into()],
            scope: Some("orgs/octo-org".into()),
            labels: vec![],
        });
        let job = st.assign_job(id).unwrap();
        assert!(st.assign_job(id).is_none(), "one job at a time");
        st.complete_job(id, job.id, JobResult::Succeeded, "ok".into());
        assert!(st.runners.is_empty());
        assert_eq!(st.jobs[&job.id].status, JobStatus::Completed);
        let id2 = st.create_runner(scope, "r1", 1, vec![], false, false, "_work");
        assert!(id2 > id);
    }

    #[test]
    fn faults_are_used_up_in_order() {
        let mut st = State::new(FakeConfig::default()).unwrap();
        st.add_fault(FaultRule {
            method: "POST".into(),
            path: "*/generate-jitconfig".into(),
            count: 2,
            fault: Fault::ServerError { status: 502 },
        });
        assert!(
            st.take_fault("GET", "/orgs/o/actions/runners/generate-jitconfig")
                .is_none()
        );
        assert!(
            st.take_fault("post", "/orgs/o/actions/runners/generate-jitconfig")
                .is_some()
        );
        assert!(st.take_fault("POST", "/x/generate-jitconfig").is_some());
        assert!(st.take_fault("POST", "/x/generate-jitconfig").is_none());
        assert!(st.faults().is_empty());
    }
}
