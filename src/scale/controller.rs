//! `sysrunner scale`'s controller: the one holder of the credentials. Creates or finds its scale
//! set, adopts or removes what an earlier run left, opens the message session and follows it as
//! GitHub's listener does (statistics, delete the message, acquire the available jobs, started,
//! completed, then the desired count), keeps one container per runner through [`Engine`], finds
//! or makes the pull-through cache container the runners are pointed at, and drains on SIGTERM
//! (leaving the cache running). What to do is decided by the pure functions of [`super`] and
//! [`super::spec`]; this module carries it out and owns the runners' bookkeeping.

use super::docker::{Engine, Found};
use super::metrics::Metrics;
use super::spec::{self, Runtime};
use super::{Change, Limits, Pool, change, desired};
use crate::config::{ScaleCache, ScaleSettings};
use crate::error::Error;
use crate::github::{self, RealTime};
use crate::runner::version::{Version, offered, runner_arch};
use crate::scaleset::{
    ActionsClient, ConflictPolicy, JobMessage, MessageSession, Options, QueueMessage,
    RunnerSetting, ScaleSet, ScaleSetLabel, ScalesetError, ensure_labels, job_messages,
};
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What a runner is doing, as far as the controller knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// JIT config or container on the way.
    Starting,
    /// Its container runs; no job seen.
    Idle,
    /// JobStarted named it.
    Busy,
    /// Being removed (scale-down or drain).
    Leaving,
}

#[derive(Debug)]
struct Tracked {
    runner_id: Option<u64>,
    container: Option<String>,
    state: State,
    /// A JobStarted named it: when its container exits, GitHub has removed it already.
    had_job: bool,
}

/// What spawned work reports back.
#[derive(Debug)]
enum Event {
    Started {
        name: String,
        runner_id: u64,
        container: String,
    },
    StartFailed {
        name: String,
        runner_id: Option<u64>,
        error: String,
    },
    Exited {
        name: String,
        container: String,
        code: Option<i64>,
    },
    /// An exited container is gone (or its removal failed): it no longer counts against
    /// SCALE_MAX_RUNNERS.
    Removed,
}

/// The longest a look for the cache holds back the runners about to be started (then they pull
/// directly, and the next start looks again).
const CACHE_LOOK: Duration = Duration::from_secs(5);

/// Start failures back off: 2 s doubling to 60 s, reset by a start that works.
fn start_backoff(failures: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(failures.min(6)).min(60))
}

struct Controller {
    s: Arc<ScaleSettings>,
    engine: Engine,
    runtime: Runtime,
    actions: Arc<ActionsClient>,
    set_id: u64,
    runners: BTreeMap<String, Tracked>,
    events: mpsc::UnboundedSender<Event>,
    /// The tasks making runners (JIT config, container) and waiting for their exits.
    starts: tokio::task::JoinSet<()>,
    /// Removals of exited containers (and their unused runners): finished, never cut off.
    cleanups: tokio::task::JoinSet<()>,
    /// Exited containers whose removal has not ended yet: they still count as containers.
    removing: u32,
    metrics: Metrics,
    _server: Option<tokio::task::JoinHandle<()>>,
    /// The image id GitHub refused the runner of (a runner exited 7).
    refused: Option<String>,
    failures: u32,
    not_before: Option<Instant>,
    assigned: i64,
    assigned_at: HashMap<i64, Instant>,
    /// The cache's URL the runners started next get (DOCKER_REGISTRY_CACHE), or why none.
    cache: Result<String, String>,
    /// What was last said about the cache: said again only when it changes.
    cache_said: Option<Result<String, String>>,
}

/// Runs the controller until SIGTERM/SIGINT and its drain, or a failure it cannot recover from.
pub async fn run(
    settings: ScaleSettings,
    delete_scale_set: bool,
    mut signals: mpsc::UnboundedReceiver<Signal>,
) -> Result<(), Error> {
    // A signal during the set-up (a 409 is waited out for minutes) ends it at once: nothing has
    // been started yet that a drain would have to remove.
    let (mut c, mut session, mut rx, rest) = tokio::select! {
        r = setup(settings) => r?,
        sig = signals.recv() => {
            tracing::info!(signal = ?sig, "stopped during the set-up");
            return Ok(());
        }
    };
    let s = c.s.clone();
    c.metrics.set_health(Ok(()));
    c.forget_orphans(&rest).await;
    c.assigned = session.session().statistics.total_assigned_jobs;
    c.scale().await;
    let mut last_id = 0i64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let failure = 'listen: loop {
        let capacity = s.max_runners;
        let got = {
            let poll = session.get_message(last_id, capacity);
            tokio::pin!(poll);
            loop {
                tokio::select! {
                    r = &mut poll => break r,
                    Some(ev) = rx.recv() => {
                        c.on_event(ev).await;
                        c.scale().await;
                    }
                    sig = signals.recv() => {
                        tracing::info!(signal = ?sig, "stopping: no new jobs, draining the runners");
                        break 'listen None;
                    }
                    _ = tick.tick() => {
                        c.check_image().await;
                        c.scale().await;
                    }
                }
            }
        };
        let failed = match got {
            Ok(None) => None,
            Ok(Some(msg)) => {
                last_id = msg.message_id;
                c.handle(&mut session, msg).await.err()
            }
            Err(e) => Some(e),
        };
        match failed {
            None => {}
            Some(e) if session_gone(&e) => {
                tracing::warn!("{e}; opening a new message session");
                match open_session(&c).await {
                    Ok(new) => {
                        session = new;
                        c.assigned = session.session().statistics.total_assigned_jobs;
                    }
                    Err(e) => break Some(e),
                }
            }
            Some(e) => break Some(e),
        }
        c.scale().await;
    };
    let set_id = c.set_id;
    let actions = c.actions.clone();
    match &failure {
        None => {
            c.metrics.set_health(Err("draining".into()));
            c.drain(&mut rx, &mut signals).await;
        }
        // GitHub failed past API_DEADLINE: the runners and their jobs are not this failure's
        // business. They are left running for the next start (compose restarts the controller)
        // to adopt; starts in flight are cut off, and what they made is found the same way.
        Some(e) => {
            c.metrics.set_health(Err(e.to_string()));
            tracing::error!(
                runners = c.runners.len(),
                "{e}; leaving the runners to the next start, which adopts them"
            );
            c.starts.abort_all();
            c.finish_cleanups().await;
        }
    }
    let closed = session.close().await;
    if let Err(e) = &closed {
        tracing::warn!("could not delete the message session: {e}");
    }
    if delete_scale_set && failure.is_none() {
        match actions.delete_scale_set(set_id).await {
            Ok(()) => tracing::info!(scale_set = set_id, "scale set deleted"),
            Err(e) => tracing::warn!("could not delete the scale set: {e}"),
        }
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

type Setup = (
    Controller,
    MessageSession,
    mpsc::UnboundedReceiver<Event>,
    Arc<github::Client>,
);

/// Everything before the first poll: the engine and its runtime, the image, the clients, the
/// scale set, what an earlier run left on this host, and the message session.
async fn setup(settings: ScaleSettings) -> Result<Setup, Error> {
    let s = Arc::new(settings);
    let engine = Engine::connect(&s.docker_socket).await?;
    let listed = engine.runtimes().await?;
    let runtime = spec::choose_runtime(s.runtime, &listed, s.allow_privileged)
        .map_err(Error::ScaleRuntime)?;
    if runtime == Runtime::Privileged {
        tracing::warn!(
            "runner containers run privileged (SCALE_ALLOW_PRIVILEGED=true): a job is root on this host"
        );
    }
    let image = engine.image(&s.image).await?.ok_or_else(|| {
        Error::ScaleImage(format!(
            "SCALE_IMAGE={} is not on this host; remedy: `docker pull {}` (the controller never pulls: a registry outage must not start runners from an unknown image)",
            s.image, s.image
        ))
    })?;
    tracing::info!(
        runtime = runtime.word(),
        image = %s.image,
        "runner containers: {} from {}",
        runtime.word(),
        s.image
    );
    let time: Arc<dyn github::Time> = Arc::new(RealTime);
    let rest = Arc::new(github::Client::new(
        &s.github.api,
        s.scope.clone(),
        s.auth.clone(),
        github::ClientOptions {
            request_timeout: s.timeouts.api,
            deadline: s.timeouts.api_deadline,
            time: time.clone(),
        },
    )?);
    let actions = Arc::new(ActionsClient::new(
        rest.clone(),
        &s.github.api,
        &s.github.web,
        &s.scope,
        Options {
            request_timeout: s.timeouts.api,
            deadline: s.timeouts.api_deadline,
            poll_timeout: Duration::from_secs(90),
            time: time.clone(),
        },
    )?);
    check_versions(&rest, image.runner_version.as_deref()).await;
    let group = actions.runner_group(&s.group).await?;
    let wanted = ensure_labels(ScaleSet {
        name: s.name.clone(),
        runner_group_id: group.id,
        labels: s
            .labels
            .iter()
            .map(|l| ScaleSetLabel {
                kind: "System".into(),
                name: l.clone(),
            })
            .collect(),
        runner_setting: RunnerSetting {
            disable_update: true,
        },
        ..Default::default()
    });
    let set = match actions.scale_set_by_name(group.id, &s.name).await? {
        Some(found) => {
            let same_labels = {
                let mut a: Vec<&str> = found.labels.iter().map(|l| l.name.as_str()).collect();
                let mut b: Vec<&str> = wanted.labels.iter().map(|l| l.name.as_str()).collect();
                a.sort();
                b.sort();
                a == b
            };
            if same_labels && found.runner_setting.disable_update {
                found
            } else {
                actions.update_scale_set(found.id, wanted.clone()).await?
            }
        }
        None => actions.create_scale_set(wanted).await?,
    };
    tracing::info!(
        scale_set = set.id,
        name = %s.name,
        labels = %s.labels.join(","),
        group = %group.name,
        "scale set ready"
    );
    let metrics = Metrics::new();
    let server =
        match s.listen {
            Some(addr) => Some(super::metrics::serve(addr, metrics.clone()).await.map_err(
                |e| Error::ScaleListen(format!("SCALE_LISTEN={addr}: cannot listen: {e}")),
            )?),
            None => None,
        };
    let (tx, rx) = mpsc::unbounded_channel();
    let mut c = Controller {
        s: s.clone(),
        engine,
        runtime,
        actions: actions.clone(),
        set_id: set.id,
        runners: BTreeMap::new(),
        events: tx,
        starts: tokio::task::JoinSet::new(),
        cleanups: tokio::task::JoinSet::new(),
        removing: 0,
        metrics,
        _server: server,
        refused: None,
        failures: 0,
        not_before: None,
        assigned: 0,
        assigned_at: HashMap::new(),
        cache: Err("SCALE_CACHE=off".into()),
        cache_said: None,
    };
    c.adopt().await?;
    c.look_for_cache().await;
    let session = open_session(&c).await?;
    Ok((c, session, rx, rest))
}

/// The scale set's message session, its id kept under SCALE_STATE_DIR so that the next start can
/// delete it if this run cannot.
async fn open_session(c: &Controller) -> Result<MessageSession, ScalesetError> {
    let store = c.s.state_dir.join(format!("session-{}", c.set_id));
    let owner = format!("sysrunner-scale-{}", c.s.name);
    MessageSession::open(
        c.actions.clone(),
        c.set_id,
        &owner,
        Some(store),
        ConflictPolicy::default(),
        &RealTime,
    )
    .await
}

/// GitHub ended the message session (deleted, or expired): what actions-runner-controller's
/// listener meets as `RunnerScaleSetSessionNotFoundException` or an expired session. The scale
/// set, its runners and their jobs are all still there: a new session goes on from here.
fn session_gone(e: &ScalesetError) -> bool {
    e.type_name()
        .is_some_and(|t| t.contains("SessionNotFound") || t.contains("SessionExpired"))
}

/// Warns when the image's runner is behind the newest release GitHub offers: the scale set
/// disables self-update, so such runners are refused once GitHub stops accepting that version.
async fn check_versions(rest: &github::Client, image: Option<&str>) {
    let image = image.and_then(Version::parse);
    let offered_v = match rest.runner_downloads().await {
        Ok(d) => offered(d.iter().map(|d| d.filename.as_str()), runner_arch()),
        Err(e) => {
            tracing::warn!("cannot read the runner versions GitHub offers: {e}");
            None
        }
    };
    match (image, offered_v) {
        (Some(i), Some(o)) if i < o => tracing::warn!(
            image = %i,
            offered = %o,
            "the image's actions/runner {i} is older than {o}, the newest GitHub offers: the scale set disables self-update, so GitHub will refuse these runners (exit 7) once {i} is too old; update SCALE_IMAGE to an image with {o}"
        ),
        (None, _) => tracing::info!(
            "the image does not name its actions/runner version (label {}); its runners are not compared with GitHub's newest",
            spec::LABEL_RUNNER_VERSION
        ),
        _ => {}
    }
}

impl Controller {
    fn pool(&self) -> Pool {
        let mut p = Pool::default();
        for t in self.runners.values() {
            match t.state {
                State::Starting => p.starting += 1,
                State::Idle => p.idle += 1,
                State::Busy => p.busy += 1,
                State::Leaving => {}
            }
        }
        p
    }

    fn limits(&self) -> Limits {
        Limits {
            min: self.s.min_runners,
            max: self.s.max_runners,
        }
    }

    fn publish(&self, want: u32) {
        let p = self.pool();
        self.metrics.desired.set(i64::from(want));
        self.metrics.idle.set(i64::from(p.idle));
        self.metrics.busy.set(i64::from(p.busy));
        self.metrics.starting.set(i64::from(p.starting));
        self.metrics
            .version_refused
            .set(i64::from(self.refused.is_some()));
    }

    /// Goes from the runners it has to the runners it wants.
    async fn scale(&mut self) {
        while self.starts.try_join_next().is_some() {}
        while self.cleanups.try_join_next().is_some() {}
        let want = desired(self.assigned, self.limits());
        let held = self.not_before.is_some_and(|t| Instant::now() < t);
        match change(want, self.pool(), self.refused.is_some() || held) {
            Change::Start(n) => {
                // SCALE_MAX_RUNNERS counts containers: one whose job completed runs until it
                // has deregistered, and an exited one is there until it has been removed.
                let leaving = self
                    .runners
                    .values()
                    .filter(|t| t.state == State::Leaving && t.container.is_some())
                    .count() as u32;
                let room = self
                    .s
                    .max_runners
                    .saturating_sub(self.pool().total() + leaving + self.removing);
                if n.min(room) > 0 {
                    self.look_for_cache().await;
                }
                for _ in 0..n.min(room) {
                    self.start_one();
                }
            }
            Change::RemoveIdle(n) => {
                let idle: Vec<String> = self
                    .runners
                    .iter()
                    .filter(|(_, t)| t.state == State::Idle)
                    .map(|(n, _)| n.clone())
                    .take(n as usize)
                    .collect();
                for name in idle {
                    self.remove_idle(&name).await;
                }
            }
            Change::Keep => {}
        }
        self.publish(want);
    }

    /// A JIT config and a container, in a task of their own; the outcome comes back as an event.
    fn start_one(&mut self) {
        let name = loop {
            let n = spec::runner_name(&self.s.name, rand::random());
            if !self.runners.contains_key(&n) {
                break n;
            }
        };
        self.runners.insert(
            name.clone(),
            Tracked {
                runner_id: None,
                container: None,
                state: State::Starting,
                had_job: false,
            },
        );
        let (actions, engine, s, runtime, set, tx) = (
            self.actions.clone(),
            self.engine.clone(),
            self.s.clone(),
            self.runtime,
            self.set_id,
            self.events.clone(),
        );
        let cache = self.cache.clone().ok();
        self.starts.spawn(async move {
            let jit = match actions.jit_config(set, &name).await {
                Ok(j) => j,
                Err(e) => {
                    let _ = tx.send(Event::StartFailed {
                        name,
                        runner_id: None,
                        error: e.to_string(),
                    });
                    return;
                }
            };
            let spec = spec::runner_spec(
                &s,
                runtime,
                &name,
                jit.runner.id,
                jit.encoded,
                cache.as_deref(),
            );
            match engine.start(&spec).await {
                Ok(container) => {
                    let _ = tx.send(Event::Started {
                        name: name.clone(),
                        runner_id: jit.runner.id,
                        container: container.clone(),
                    });
                    let code = engine.wait(&container).await;
                    let _ = tx.send(Event::Exited {
                        name,
                        container,
                        code,
                    });
                }
                Err(e) => {
                    let _ = tx.send(Event::StartFailed {
                        name,
                        runner_id: Some(jit.runner.id),
                        error: e.to_string(),
                    });
                }
            }
        });
    }

    fn watch(&mut self, name: String, container: String) {
        let (engine, tx) = (self.engine.clone(), self.events.clone());
        self.starts.spawn(async move {
            let code = engine.wait(&container).await;
            let _ = tx.send(Event::Exited {
                name,
                container,
                code,
            });
        });
    }

    async fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Removed => self.removing = self.removing.saturating_sub(1),
            Event::Started {
                name,
                runner_id,
                container,
            } => {
                tracing::info!(runner = %name, runner_id, container = %short(&container), "runner container started");
                match self.runners.get_mut(&name) {
                    Some(t) => {
                        t.runner_id = Some(runner_id);
                        t.container = Some(container);
                        if t.state == State::Starting {
                            t.state = State::Idle;
                        }
                    }
                    None => {
                        // Forgotten meanwhile (drained): remove it at once.
                        let _ = self.actions.remove_runner(runner_id).await;
                        let _ = self.engine.remove(&container).await;
                    }
                }
            }
            Event::StartFailed {
                name,
                runner_id,
                error,
            } => {
                self.runners.remove(&name);
                self.metrics.start_failures.inc();
                let wait = self.failed(&format!("cannot start a runner: {error}"));
                tracing::error!(runner = %name, "cannot start a runner: {error}; next try in {wait:?}");
                if let Some(id) = runner_id {
                    self.forget_runner(id, &name).await;
                }
            }
            Event::Exited {
                name,
                container,
                code,
            } => {
                let t = self.runners.remove(&name);
                let had_job = t.as_ref().is_some_and(|t| t.had_job);
                let removed = t.as_ref().is_some_and(|t| t.state == State::Leaving);
                tracing::info!(runner = %name, exit = ?code, had_job, "runner container exited");
                // Removing the container (and a runner that never had a job) happens beside the
                // loop: messages and other runners' events do not wait for it.
                let forget = (!had_job && !removed)
                    .then(|| t.as_ref().and_then(|t| t.runner_id))
                    .flatten();
                let (engine, actions) = (self.engine.clone(), self.actions.clone());
                let (runner, tx) = (name.clone(), self.events.clone());
                self.removing += 1;
                self.cleanups.spawn(async move {
                    if let Err(e) = engine.remove(&container).await {
                        tracing::warn!(runner = %runner, "{e}");
                    }
                    let _ = tx.send(Event::Removed);
                    if let Some(id) = forget {
                        forget_runner(&actions, id, &runner).await;
                    }
                });
                if had_job {
                    // A runner that ran its job: the image works.
                    self.failures = 0;
                    self.not_before = None;
                    if self.refused.is_none() {
                        self.metrics.set_health(Ok(()));
                    }
                } else if !removed && code != Some(7) {
                    // It ended before any job (a crash-looping image, a bad limit): back off as
                    // for a start that failed, or it would be made again at once, forever.
                    let wait = self.failed(&format!(
                        "runner container {name} exited {code:?} before any job"
                    ));
                    tracing::warn!(runner = %name, "it exited before any job; next start in {wait:?}");
                }
                if code == Some(7) {
                    // An empty id (the image could not be read now) is filled in by the next
                    // check: it only marks the refusal, it never lifts it.
                    self.refused = Some(match self.engine.image(&self.s.image).await {
                        Ok(Some(img)) => img.id,
                        _ => String::new(),
                    });
                    self.metrics.version_refused.set(1);
                    self.metrics.set_health(Err(format!(
                        "GitHub refuses the runner version of {}: no runner is started until the image is updated",
                        self.s.image
                    )));
                    tracing::error!(
                        runner = %name,
                        image = %self.s.image,
                        "GitHub refused the image's runner version (exit 7): no new runner until {} is updated (`docker pull`)",
                        self.s.image
                    );
                }
            }
        }
    }

    /// Waits for the removals under way, at most STOP_TIMEOUT.
    async fn finish_cleanups(&mut self) {
        let all = async { while self.cleanups.join_next().await.is_some() {} };
        if tokio::time::timeout(self.s.timeouts.stop, all)
            .await
            .is_err()
        {
            tracing::warn!(
                "container removals still under way after STOP_TIMEOUT; the next start finds what is left"
            );
        }
    }

    /// Counts a failure to bring a runner up: the next start waits (2 s doubling to 60 s), and
    /// after five in a row `/healthz` says why.
    fn failed(&mut self, why: &str) -> Duration {
        self.failures += 1;
        let wait = start_backoff(self.failures);
        self.not_before = Some(Instant::now() + wait);
        if self.failures >= 5 && self.refused.is_none() {
            self.metrics.set_health(Err(format!(
                "{} runners in a row failed to come up; the last: {why}",
                self.failures
            )));
        }
        wait
    }

    /// SCALE_CACHE=auto: finds, starts, connects or makes the cache container and takes its URL
    /// for the runners started next, within [`CACHE_LOOK`]. Runs at the start and before runners
    /// are started (one inspect when all is well), so that a cache stopped or removed meanwhile
    /// is brought back, and one whose address changed is followed. Says which cache the runners
    /// use, or why none, whenever that changes (a missing image is therefore warned of once).
    async fn look_for_cache(&mut self) {
        self.cache = match &self.s.cache {
            None => Err("SCALE_CACHE=off".into()),
            Some(cache) => {
                match tokio::time::timeout(CACHE_LOOK, settle_cache(&self.engine, &self.s, cache))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(format!(
                        "the Docker Engine did not settle the cache container {} within {CACHE_LOOK:?}",
                        cache.name
                    )),
                }
            }
        };
        if self.cache_said.as_ref() == Some(&self.cache) {
            return;
        }
        match &self.cache {
            Ok(url) => tracing::info!(
                cache = %url,
                "runners pull Docker Hub images through the cache {} at {url} (DOCKER_REGISTRY_CACHE)",
                self.s.cache.as_ref().map_or("", |c| c.name.as_str())
            ),
            Err(why) if self.s.cache.is_none() => {
                tracing::info!("runners pull directly, through no cache: {why}")
            }
            Err(why) => tracing::warn!(
                "runners pull directly, through no cache: {why}; the next runner start looks again"
            ),
        }
        self.cache_said = Some(self.cache.clone());
    }

    /// Deletes a runner that will never run a job (its container is gone or never started).
    async fn forget_runner(&self, id: u64, name: &str) {
        forget_runner(&self.actions, id, name).await;
    }

    /// An updated image (a new id under SCALE_IMAGE) lifts a version refusal.
    async fn check_image(&mut self) {
        let Some(refused) = self.refused.clone() else {
            return;
        };
        let Ok(Some(img)) = self.engine.image(&self.s.image).await else {
            return;
        };
        if refused.is_empty() {
            self.refused = Some(img.id);
        } else if img.id != refused {
            tracing::info!(image = %self.s.image, "the image was updated: starting runners again");
            self.refused = None;
            self.metrics.version_refused.set(0);
            self.metrics.set_health(Ok(()));
        }
    }

    /// Removes an idle runner: at GitHub first (a busy one is refused there and kept), then its
    /// container.
    async fn remove_idle(&mut self, name: &str) {
        let Some(t) = self.runners.get_mut(name) else {
            return;
        };
        let (id, container) = (t.runner_id, t.container.clone());
        if let Some(id) = id {
            match self.actions.remove_runner(id).await {
                Ok(_) => {}
                Err(e) if e.type_name().is_some_and(|t| t.contains("JobStillRunning")) => {
                    tracing::info!(runner = %name, "kept: it has a job already");
                    if let Some(t) = self.runners.get_mut(name) {
                        t.state = State::Busy;
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(runner = %name, "kept for now: GitHub did not remove it ({e})");
                    return;
                }
            }
        }
        if let Some(t) = self.runners.get_mut(name) {
            t.state = State::Leaving;
        }
        if let Some(c) = container
            && let Err(e) = self.engine.remove(&c).await
        {
            tracing::warn!(runner = %name, "{e}");
        }
        tracing::info!(runner = %name, "idle runner removed");
    }

    /// The listener's order: statistics, delete the message, acquire the available jobs,
    /// started, completed, then the desired count (by the caller).
    async fn handle(
        &mut self,
        session: &mut MessageSession,
        msg: QueueMessage,
    ) -> Result<(), crate::scaleset::ScalesetError> {
        if let Some(stats) = &msg.statistics {
            self.assigned = stats.total_assigned_jobs;
        }
        // Unread, a message is not acknowledged: GitHub's listener fails on it the same way, and
        // the message comes back to the next session.
        let jobs =
            job_messages(&msg.body).map_err(|e| crate::scaleset::ScalesetError::Unexpected {
                what: format!("message {}", msg.message_id),
                detail: format!("a body that is not job messages: {e}"),
            })?;
        session.delete_message(msg.message_id).await?;
        let available: Vec<i64> = jobs
            .iter()
            .filter_map(|j| match j {
                JobMessage::Available { job, .. } => Some(job.runner_request_id),
                _ => None,
            })
            .collect();
        if !available.is_empty() {
            let got = session.acquire_jobs(&available).await?;
            tracing::info!(
                requested = available.len(),
                acquired = got.len(),
                "jobs acquired"
            );
        }
        let now = Instant::now();
        for j in &jobs {
            match j {
                JobMessage::Assigned { job } => {
                    self.assigned_at.entry(job.runner_request_id).or_insert(now);
                }
                JobMessage::Started {
                    job, runner_name, ..
                } => {
                    self.metrics.jobs_started.inc();
                    if let Some(t0) = self.assigned_at.remove(&job.runner_request_id) {
                        self.metrics
                            .job_start
                            .observe(now.duration_since(t0).as_secs_f64());
                    }
                    tracing::info!(runner = %runner_name, job = %job.job_display_name, "job started");
                    if let Some(t) = self.runners.get_mut(runner_name) {
                        t.state = State::Busy;
                        t.had_job = true;
                    }
                }
                _ => {}
            }
        }
        for j in &jobs {
            if let JobMessage::Completed {
                job,
                result,
                runner_name,
                ..
            } = j
            {
                self.metrics.jobs_completed.inc();
                self.assigned_at.remove(&job.runner_request_id);
                tracing::info!(runner = %runner_name, job = %job.job_display_name, result = %result, "job completed");
                if let Some(t) = self.runners.get_mut(runner_name) {
                    t.had_job = true;
                    // Its container ends on its own; until then it is not a free runner.
                    t.state = State::Leaving;
                }
            }
        }
        Ok(())
    }

    /// What an earlier run left on this host: running containers are adopted (as idle: a busy
    /// one is refused removal at GitHub and kept), exited ones removed with their runners.
    async fn adopt(&mut self) -> Result<(), Error> {
        let found: Vec<Found> = self.engine.ours(&self.s.name).await?;
        for f in found {
            if f.running && !f.runner_name.is_empty() {
                tracing::info!(runner = %f.runner_name, container = %short(&f.id), "adopted a running runner container an earlier run left");
                self.runners.insert(
                    f.runner_name.clone(),
                    Tracked {
                        runner_id: f.runner_id,
                        container: Some(f.id.clone()),
                        state: State::Idle,
                        had_job: false,
                    },
                );
                self.watch(f.runner_name, f.id);
            } else {
                tracing::info!(runner = %f.runner_name, container = %short(&f.id), "removed a stopped runner container an earlier run left");
                self.engine.remove(&f.id).await?;
                if let Some(id) = f.runner_id {
                    self.forget_runner(id, &f.runner_name).await;
                }
            }
        }
        Ok(())
    }

    /// Runners of this scale set that no container backs (a container removed while the
    /// controller was down), found through the REST listing, since the scale set API cannot
    /// list its runners: named exactly `SCALE_SET_NAME-<8 hex>` and, asked one by one, of this
    /// scale set. Run once the session is open, so that a second controller given the same
    /// name by mistake meets the 409 before it touches anything.
    async fn forget_orphans(&self, rest: &github::Client) {
        let listed = match rest.list_runners(None).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cannot list the runners to find those an earlier run left: {e}");
                return;
            }
        };
        for r in listed {
            if !spec::is_runner_name(&self.s.name, &r.name) || self.runners.contains_key(&r.name) {
                continue;
            }
            match self.actions.runner_by_name(&r.name).await {
                Ok(Some(a)) if a.runner_scale_set_id == self.set_id => {}
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(runner = %r.name, "cannot tell whose runner it is: {e}");
                    continue;
                }
            }
            match rest.delete_runner(r.id).await {
                Ok(github::Deleted::Busy) => {
                    tracing::warn!(runner = %r.name, "a runner of this scale set without a container is busy at GitHub; left alone")
                }
                Ok(_) => {
                    tracing::info!(runner = %r.name, "deleted a runner an earlier run left without a container")
                }
                Err(e) => {
                    tracing::warn!(runner = %r.name, "cannot delete a runner an earlier run left: {e}")
                }
            }
        }
    }

    /// SIGTERM: idle and starting runners go at once; busy ones get DRAIN_TIMEOUT to finish,
    /// then their containers are stopped (the runner cancels its job and deregisters).
    async fn drain(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Event>,
        signals: &mut mpsc::UnboundedReceiver<Signal>,
    ) {
        let deadline = tokio::time::Instant::now() + self.s.timeouts.drain;
        // A runner still being made gets a few seconds past the drain to show its container
        // (then removed like an idle one); after that its task is cut off, and what it made is
        // found by the next start (containers by label, runners by name).
        let mut starting_limit = None;
        loop {
            let idle: Vec<String> = self
                .runners
                .iter()
                .filter(|(_, t)| t.state == State::Idle)
                .map(|(n, _)| n.clone())
                .collect();
            for name in idle {
                self.remove_idle(&name).await;
            }
            let starting = self
                .runners
                .values()
                .filter(|t| t.state == State::Starting)
                .count();
            if self.runners.is_empty() || (starting_limit.is_some() && starting == 0) {
                break;
            }
            let busy = self
                .runners
                .values()
                .filter(|t| t.state == State::Busy)
                .count();
            tracing::info!(busy, starting, left = self.runners.len(), "draining");
            let until = starting_limit.unwrap_or(deadline);
            tokio::select! {
                Some(ev) = rx.recv() => self.on_event(ev).await,
                _ = tokio::time::sleep_until(until) => {
                    if starting_limit.is_some() {
                        break;
                    }
                    starting_limit = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                }
                _ = signals.recv(), if starting_limit.is_none() => {
                    tracing::warn!("a second signal: stopping the busy runners now");
                    starting_limit = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                }
            }
            self.publish(0);
        }
        self.starts.abort_all();
        self.finish_cleanups().await;
        // Past the drain: stop what is left at once, all together (each runner cancels its job
        // and deregisters within STOP_TIMEOUT), then remove the containers.
        let left: Vec<(String, Tracked)> = std::mem::take(&mut self.runners).into_iter().collect();
        let stops = left.iter().filter_map(|(name, t)| {
            let c = t.container.clone()?;
            let (engine, grace, name) = (self.engine.clone(), self.s.timeouts.stop, name.clone());
            let busy = t.state == State::Busy;
            Some(async move {
                if busy {
                    tracing::warn!(runner = %name, "stopping a busy runner past DRAIN_TIMEOUT: its job is cancelled");
                } else {
                    tracing::info!(runner = %name, "stopping a runner whose job has ended");
                }
                if let Err(e) = engine.stop(&c, grace).await {
                    tracing::warn!(runner = %name, "{e}");
                }
                let _ = engine.remove(&c).await;
            })
        });
        futures_util::future::join_all(stops).await;
        for (name, t) in left {
            if !t.had_job
                && let Some(id) = t.runner_id
            {
                self.forget_runner(id, &name).await;
            }
        }
        self.publish(0);
    }
}

/// Brings the cache container SCALE_CACHE_NAME to running on SCALE_NETWORK, as
/// [`spec::cache_step`] says, one step at a time: its URL, or why there is none. A container found
/// is only started or connected, never recreated or removed (compose's may hold Docker Hub
/// credentials; they stay in it); one is made only when there is none and its image is here.
async fn settle_cache(
    engine: &Engine,
    s: &ScaleSettings,
    cache: &ScaleCache,
) -> Result<String, String> {
    let name = &cache.name;
    // Make, then start or connect: three steps at most, one more for a container made by
    // someone else (compose) between the look and the make.
    for _ in 0..4 {
        let seen = engine
            .cache(name, &s.network)
            .await
            .map_err(|e| e.to_string())?;
        let id = seen.as_ref().map_or("", |c| c.id.as_str());
        match spec::cache_step(seen.as_ref()) {
            spec::CacheStep::Use(url) => return Ok(url),
            spec::CacheStep::Unusable(why) => {
                return Err(format!("the cache container {name} is there, but {why}"));
            }
            spec::CacheStep::Start => {
                engine.start_existing(id).await.map_err(|e| e.to_string())?;
                tracing::info!(container = %short(id), "started the stopped cache container {name}");
            }
            spec::CacheStep::Connect => {
                engine
                    .attach(&s.network, id)
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::info!(container = %short(id), network = %s.network, "connected the cache container {name} to SCALE_NETWORK={}", s.network);
            }
            spec::CacheStep::Create => {
                let present = engine
                    .image(&cache.image)
                    .await
                    .map_err(|e| e.to_string())?;
                if present.is_none() {
                    return Err(format!(
                        "there is no container {name}, and its image SCALE_CACHE_IMAGE={} is not on this host; remedy: `docker pull {}` (the controller never pulls), or run compose.scale.yml's `cache` service",
                        cache.image, cache.image
                    ));
                }
                match engine.make_cache(&spec::cache_spec(s, cache)).await {
                    Ok(id) => tracing::info!(
                        container = %short(&id),
                        "made the cache container {name} from {}: restart always, its layers in the volume {name}",
                        cache.image
                    ),
                    // Made by someone else meanwhile: found by the next look.
                    Err(e)
                        if matches!(
                            e.source,
                            bollard::errors::Error::DockerResponseServerError {
                                status_code: 409,
                                ..
                            }
                        ) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
    }
    Err(format!(
        "the cache container {name} was not running on SCALE_NETWORK={} after starting or connecting it",
        s.network
    ))
}

/// Deletes a runner that will never run a job at GitHub; a failure is a warning (the next
/// start's orphan sweep finds it).
async fn forget_runner(actions: &ActionsClient, id: u64, name: &str) {
    match actions.remove_runner(id).await {
        Ok(true) => tracing::info!(runner = %name, runner_id = id, "runner deleted at GitHub"),
        Ok(false) => {}
        Err(e) => tracing::warn!(runner = %name, "cannot delete the runner at GitHub: {e}"),
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_failures_back_off_from_2s_to_a_minute() {
        let secs: Vec<u64> = (1..=8).map(|n| start_backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
