//! One life of the container, from validated settings to exit. The order and the budgets are the
//! pure state machine's ([`machine`]); this module sets a life up (reaper, probe, the life's
//! sandbox planned and built beside the registration ([`sandboxed`]) or the pristine state, a
//! leftover registration), then drives the machine: it turns processes, HTTP calls, timers and
//! signals into events, and performs the machine's actions through one small [`Host`]. Each
//! step's mechanics belong to its module (probe, dockerd, github, runner); the files of a life
//! (record, health state) to [`pristine`] and [`health`].

pub mod health;
pub mod listener;
pub mod machine;
pub mod pristine;
pub mod sandboxed;
pub mod versions;

pub use crate::register;

use crate::config::{DockerdMode, RunSettings};
use crate::dockerd::{self, Dockerd, plan::SOCKET};
use crate::error::Error;
use crate::exit::Exit;
use crate::github::{Deleted as ApiDeleted, RealTime};
use crate::process::Spawner;
use crate::reaper::{self, Reaper};
use crate::sandbox;
use health::Published;
use machine::{Action, Config, Deleted, Event, Health, Machine, Registration};
use nix::sys::signal::Signal;
use pristine::{Layout, RunnerUser};
use register::{Registered, Registrar, Start};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What an earlier life registered, kept until it is deleted.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    runner_id: u64,
    name: String,
}

fn read_record(layout: &Layout) -> Option<Record> {
    serde_json::from_slice(&std::fs::read(&layout.record).ok()?).ok()
}

fn write_record(layout: &Layout, r: &Record) {
    if let Err(e) = std::fs::create_dir_all(&layout.state)
        .and_then(|()| std::fs::write(&layout.record, serde_json::to_vec(r).expect("serialises")))
    {
        tracing::warn!(
            "cannot record runner {} in {}: {e}",
            r.runner_id,
            layout.record.display()
        );
    }
}

fn forget_record(layout: &Layout) {
    let _ = std::fs::remove_file(&layout.record);
}

/// Runners earlier lives left that GitHub would not let go yet (busy with a job a life was cut
/// off in): each life tries them again until they are gone.
fn left_busy_path(layout: &Layout) -> PathBuf {
    layout.state.join("left-busy.json")
}

fn read_left_busy(layout: &Layout) -> Vec<Record> {
    std::fs::read(left_busy_path(layout))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_left_busy(layout: &Layout, left: &[Record]) {
    let path = left_busy_path(layout);
    if left.is_empty() {
        let _ = std::fs::remove_file(&path);
        return;
    }
    if let Err(e) = std::fs::create_dir_all(&layout.state)
        .and_then(|()| std::fs::write(&path, serde_json::to_vec(left).expect("serialises")))
    {
        tracing::warn!(
            "cannot record the runners left busy in {}: {e}; `sysrunner prune` deletes them once offline",
            path.display()
        );
    }
}

/// Runs one life. `signals` yields once per SIGTERM/SIGINT: the first stops gracefully (drain,
/// then deregister and stop within STOP_TIMEOUT), the second skips the drain. `Ok` for a job done
/// or a clean stop; the error says why not (`crate::exit` turns it into the exit code).
pub async fn run(
    s: RunSettings,
    mut signals: mpsc::UnboundedReceiver<Signal>,
) -> Result<(), Error> {
    tracing::info!(
        phase = "start",
        version = env!("CARGO_PKG_VERSION"),
        "sysrunner {} starts a life",
        env!("CARGO_PKG_VERSION")
    );
    let result = live(&s, &mut signals).await;
    let code = Exit::of(&result).code();
    match peak_rss_kb() {
        Some(peak_rss_kb) => tracing::info!(phase = "exit", code, peak_rss_kb, "exit {code}"),
        None => tracing::info!(phase = "exit", code, "exit {code}"),
    }
    result
}

/// sysrunner's peak resident memory (VmHWM), in kB.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Logs an error of the set-up (the machine logs its own as it decides on them).
fn logged(e: Error) -> Error {
    tracing::error!("{e}");
    e
}

async fn live(s: &RunSettings, signals: &mut mpsc::UnboundedReceiver<Signal>) -> Result<(), Error> {
    let reaper = Reaper::start().map_err(Error::Reaper).map_err(logged)?;
    let dockerd_on = s.docker.dockerd == DockerdMode::On;
    // dockerd's version is read beside everything up to dockerd's spawn (see Beside::replan).
    let version = dockerd_on.then(|| {
        let r = reaper.clone();
        tokio::spawn(async move { crate::dockerd::installed_version_via(&r).await })
    });
    let report = crate::assess::assess_unversioned(Path::new("/"), &s.docker).await;
    // The plan of the dockerd this container can run, if it can run one (DOCKERD=off still
    // plans it: the sandbox lays out its data root).
    let plan = match report.plan() {
        Ok(p) => Some(p.clone()),
        Err(u) if !dockerd_on => {
            tracing::warn!(
                runtime = u.runtime.as_str(),
                "{u}; DOCKERD=off: the life runs without one"
            );
            None
        }
        Err(u) => {
            tracing::error!(runtime = u.runtime.as_str(), "{u}");
            if let Some(r) = u.remedy {
                tracing::error!("remedy: {r}");
            }
            return Err(Error::Unsupported(u));
        }
    };
    tracing::info!(
        phase = "probe",
        runtime = report.runtime.as_str(),
        "runtime {}: {}",
        report.runtime.as_str(),
        report.reasons.join("; ")
    );
    if dockerd_on {
        for n in plan.iter().flat_map(|p| &p.notes) {
            tracing::warn!("dockerd: {n}");
        }
    }

    for e in pristine::mask_secret_files(&s.secret_files) {
        tracing::warn!("could not mask a secret file, a job may read it: {e}");
    }
    let user = RunnerUser::lookup(&s.runner.user)
        .map_err(Error::RunnerUser)
        .map_err(logged)?;
    let registrar: Arc<dyn Registrar> = Arc::from(
        register::from_settings(s, Arc::new(RealTime))
            .map_err(Error::Register)
            .map_err(logged)?,
    );
    let mut layout = Layout::new(&s.runner.dir, &user.home, Path::new("/"));

    let planned = sandboxed::plan(s, &report, plan.as_ref(), &user)
        .await
        .map_err(logged)?;
    let mut plan = plan;
    let sandbox = match planned {
        Some((req, planned)) => {
            let state_dir = planned.state_dir().to_path_buf();
            let slot = sandboxed::build(req, planned, reaper.clone());
            // LIFE_SANDBOX=required: built beside the registration, dockerd's start waits for
            // it, and a failure ends the life. auto: waited for here, so that a sandbox that
            // cannot be built still leaves the pristine reset. Without a dockerd nothing else
            // waits for it before the runner starts: waited for here too.
            let auto = s.runner.sandbox == crate::config::LifeSandbox::Auto;
            let slot = if auto || !dockerd_on {
                match sandboxed::ready(&mut slot.state()).await {
                    Ok(()) => Some(slot),
                    Err(why) if !auto => {
                        slot.end(s.timeouts.stop).await;
                        return Err(logged(Error::SandboxBuild(why)));
                    }
                    Err(why) => {
                        if let sandbox::Decision::Reset { warning: Some(w) } =
                            sandbox::decide(s.runner.sandbox, Some(&why))
                        {
                            tracing::warn!(phase = "sandbox", "{w}");
                        }
                        slot.end(s.timeouts.stop).await;
                        None
                    }
                }
            } else {
                Some(slot)
            };
            if slot.is_some() {
                // The registration record lives on the volume, outside what the life gets.
                layout.state = state_dir;
                layout.record = layout.state.join("registration.json");
            }
            slot
        }
        None => None,
    };
    let spawner: Arc<dyn Spawner> = match &sandbox {
        Some(sb) => {
            // The life's own root is fresh: the runner runs from its release there, and
            // everything the container's reset does, the life's overlay does. dockerd's
            // preparation of the container (securityfs, cgroup nesting, shared mounts) is the
            // life's mount plan and cgroup's.
            layout.runner_root = s.runner.dir.clone();
            if let Some(p) = plan.as_mut() {
                p.pre_steps.clear();
            }
            if let Err(e) = std::fs::create_dir_all(&layout.run_dir) {
                tracing::warn!("cannot create {}: {e}", layout.run_dir.display());
            }
            sb.spawner()
        }
        None => {
            // Copies and empties directories: off the runtime's thread.
            let restored = {
                let (layout, user, sudo) = (layout.clone(), user.clone(), s.runner.sudo);
                tokio::task::spawn_blocking(move || pristine::restore(&layout, &user, sudo))
                    .await
                    .map_err(|e| Error::Pristine(e.to_string()))
                    .and_then(|r| r.map_err(Error::Pristine))
                    .map_err(logged)?
            };
            tracing::info!(
                phase = "pristine",
                "restored a pristine life in {:.2}s (runner directory: {:?})",
                restored.took.as_secs_f64(),
                restored.runner_dir
            );
            for n in restored.notes {
                tracing::info!("{n}");
            }
            Arc::new(crate::process::Local {
                reaper: reaper.clone(),
            })
        }
    };

    let known_id = delete_leftover(registrar.as_ref(), &layout, &s.runner.name).await;
    let versions = Arc::new(versions::Tracker::default());
    check_runner_version(registrar.as_ref(), versions.clone());

    let (tx, mut events) = mpsc::unbounded_channel();
    let env = crate::runner::env::runner_env(
        std::env::vars(),
        &user.name,
        &user.home.to_string_lossy(),
        dockerd_on.then(|| format!("unix://{SOCKET}")).as_deref(),
    );
    let replan = version.map(|version| {
        let (report, docker) = (report.clone(), s.docker.clone());
        let replan: crate::process::BoxFut<'static, Option<crate::dockerd::Plan>> =
            Box::pin(async move { report.replan(&docker, version.await.ok().flatten()) });
        replan
    });
    let beside = crate::dockerd::Beside {
        replan,
        // In a sandbox dockerd gets a network namespace of its own, new with each life.
        sweep: plan
            .as_ref()
            .filter(|_| dockerd_on && sandbox.is_none())
            .map(|p| crate::dockerd::leftovers::sweep(p.iptables, reaper.clone())),
        // Asked now, beside the probe's end and containerd's start; dockerd waits for none of it.
        registry: crate::registry::decide(&s.docker, sandbox.is_some())
            .filter(|_| dockerd_on)
            .map(|d| tokio::spawn(crate::registry::resolve(d))),
    };
    let mut host = RealHost {
        beside: Mutex::new(Some(beside)),
        s: Arc::new(s.clone()),
        plan: plan.filter(|_| dockerd_on).map(Arc::new),
        spawner,
        life: sandbox.as_ref().map(sandboxed::Slot::state),
        registrar: registrar.clone(),
        known_id,
        layout: Arc::new(layout),
        user: Arc::new(user),
        env: Arc::new(env),
        events: tx,
        versions: versions.clone(),
        health: Arc::new(Mutex::new(Health::Starting)),
        started: health::now_epoch(),
        dockerd: Arc::new(Mutex::new(None)),
        registered: Arc::new(Mutex::new(None)),
        listener: None,
        update_watch: None,
    };
    host.republish_on_version_news();
    let (machine, actions) = Machine::new(
        Config {
            stop: s.timeouts.stop,
            drain: s.timeouts.drain,
            deregisters: registrar.deregisters(),
            pass_deprecated: s.pass_deprecated_exit,
            registrar: registrar.kind(),
            dockerd: dockerd_on,
        },
        Instant::now(),
    );
    let result = drive(machine, actions, &mut host, &mut events, signals).await;
    if let Some(sb) = sandbox {
        sb.end(s.timeouts.stop).await;
    }
    result
}

/// Deletes the runners earlier lives recorded and left registered (their container was killed,
/// say): the last life's record, and those an earlier try found busy. One still busy (its job was
/// cut off and GitHub has not given up on it yet) is kept for the next life to try again; when it
/// holds `name`, its id is returned: this life's registration then takes a name of its own.
async fn delete_leftover(registrar: &dyn Registrar, layout: &Layout, name: &str) -> Option<u64> {
    if !registrar.deregisters() {
        return None;
    }
    let mut left = read_left_busy(layout);
    if let Some(rec) = read_record(layout)
        && !left.iter().any(|r| r.runner_id == rec.runner_id)
    {
        left.push(rec);
    }
    let mut still = Vec::new();
    let mut busy_with_name = None;
    for rec in left {
        match registrar.delete_leftover(rec.runner_id, &rec.name).await {
            Ok(Some(ApiDeleted::Deleted)) => tracing::info!(
                runner_id = rec.runner_id,
                "deleted runner {} that an earlier life left registered",
                rec.name
            ),
            Ok(Some(ApiDeleted::Busy)) => {
                tracing::warn!(
                    runner_id = rec.runner_id,
                    "runner {}, which an earlier life left, is still busy at GitHub (its job was cut off); a later life deletes it",
                    rec.name
                );
                if rec.name == name {
                    busy_with_name = Some(rec.runner_id);
                }
                still.push(rec);
            }
            Ok(_) => tracing::debug!(
                runner_id = rec.runner_id,
                "the runner an earlier life recorded is gone"
            ),
            Err(e) => {
                tracing::warn!(
                    runner_id = rec.runner_id,
                    "cannot delete runner {}, which an earlier life left ({e}); a later life tries again",
                    rec.name
                );
                still.push(rec);
            }
        }
    }
    forget_record(layout);
    write_left_busy(layout, &still);
    busy_with_name
}

/// Asks GitHub, beside start-up and never on its path, which runner release it offers; the image's
/// own version comes from the listener's first lines.
fn check_runner_version(registrar: &dyn Registrar, versions: Arc<versions::Tracker>) {
    let Some(fetch) = registrar.runner_downloads() else {
        return;
    };
    tokio::spawn(async move {
        match fetch.await {
            Ok(list) => versions.offered(crate::runner::version::offered(
                list.iter()
                    .filter(|d| d.os == "linux")
                    .map(|d| d.filename.as_str()),
                crate::runner::version::runner_arch(),
            )),
            Err(e) => tracing::warn!("cannot learn which runner release GitHub offers: {e}"),
        }
    });
}

/// What the driver needs done in the world: one call per [`Action`] but `Exit`. Effects that take
/// time run in the background and report back with an [`Event`].
pub trait Host {
    fn perform(&mut self, action: Action);
}

/// Drives `machine` until its life is over: performs its actions, feeds it events, signals and
/// timeouts. The loop only dispatches; every decision is the machine's.
pub async fn drive(
    mut machine: Machine,
    mut actions: Vec<Action>,
    host: &mut impl Host,
    events: &mut mpsc::UnboundedReceiver<Event>,
    signals: &mut mpsc::UnboundedReceiver<Signal>,
) -> Result<(), Error> {
    loop {
        for action in actions.drain(..) {
            if action == Action::Exit {
                return machine.take_outcome().unwrap_or(Ok(()));
            }
            host.perform(action);
        }
        let timeout = machine.poll_timeout();
        actions = tokio::select! {
            Some(event) = events.recv() => machine.handle(Instant::now(), event),
            Some(sig) = signals.recv() => machine.handle(Instant::now(), Event::Signal(sig)),
            _ = sleep_until(timeout) => machine.handle_timeout(Instant::now()),
            else => {
                // No event can come any more: nothing will move the life. Never happens while the
                // host holds its sender; end rather than hang.
                tracing::error!("the life's event sources closed: ending it");
                return machine.take_outcome().unwrap_or(Ok(()));
            }
        };
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The host of a real life: dockerd, GitHub, the runner's processes, the state files.
struct RealHost {
    /// What dockerd's launch does beside containerd's start; taken by the first launch.
    beside: Mutex<Option<crate::dockerd::Beside>>,
    s: Arc<RunSettings>,
    /// `None` with DOCKERD=off: the machine then never asks for dockerd.
    plan: Option<Arc<crate::dockerd::Plan>>,
    /// Where the life's processes run: sysrunner's own children, or the life sandbox.
    spawner: Arc<dyn Spawner>,
    /// The life sandbox, when the life has one: dockerd waits for it, health publishes its
    /// dockerd's socket, the last-resort kill leaves its setup process alone.
    life: Option<tokio::sync::watch::Receiver<sandboxed::State>>,
    registrar: Arc<dyn Registrar>,
    /// The runner an earlier life left, busy: registered under its id again.
    known_id: Option<u64>,
    layout: Arc<Layout>,
    user: Arc<RunnerUser>,
    env: Arc<BTreeMap<String, String>>,
    events: mpsc::UnboundedSender<Event>,
    versions: Arc<versions::Tracker>,
    /// The last state published, so news of the runner's version republishes it.
    health: Arc<Mutex<Health>>,
    started: u64,
    dockerd: Arc<Mutex<Option<Arc<Dockerd>>>>,
    /// What the registration gave the listener (a JIT config, or config.sh's token).
    registered: Arc<Mutex<Option<Registered>>>,
    listener: Option<listener::Listener>,
    update_watch: Option<tokio::task::JoinHandle<()>>,
}

impl RealHost {
    fn send(events: &mpsc::UnboundedSender<Event>, e: Event) {
        // Fails only once the life is over and the receiver gone: nobody is left to tell.
        let _ = events.send(e);
    }

    fn publish(&self, h: Health) {
        *self.health.lock().expect("health lock") = h;
        health::publish(&self.layout.run_dir, &self.published(h));
    }

    fn published(&self, h: Health) -> Published {
        Published {
            state: h,
            started: self.started,
            startup_allowance_secs: health::allowance(self.s.docker.ready_timeout),
            runner: Some(self.s.runner.name.clone()),
            runner_version: self.versions.current(),
            docker_socket: self
                .life
                .as_ref()
                .and_then(|l| sandboxed::outside(l, Path::new(SOCKET))),
            without_dockerd: self.s.docker.dockerd == DockerdMode::Off,
            registry: self
                .dockerd
                .lock()
                .expect("dockerd slot")
                .as_ref()
                .and_then(|d| d.registry.clone()),
        }
    }

    /// The version check's result arrives whenever it does: publish the current state again.
    fn republish_on_version_news(&self) {
        let mut news = self.versions.subscribe();
        let (dir, health, versions) = (
            self.layout.run_dir.clone(),
            self.health.clone(),
            self.versions.clone(),
        );
        let base = self.published(Health::Starting);
        tokio::spawn(async move {
            while news.changed().await.is_ok() {
                let state = *health.lock().expect("health lock");
                health::publish(
                    &dir,
                    &Published {
                        state,
                        runner_version: versions.current(),
                        ..base.clone()
                    },
                );
            }
        });
    }

    fn start_dockerd(&self) {
        let Some(plan) = self.plan.clone() else {
            return Self::send(
                &self.events,
                Event::DockerdFailed(Error::Dockerd(dockerd::LaunchError::Prepare(
                    dockerd::PrepareError::Step {
                        step: "start dockerd".into(),
                        source: std::io::Error::other("DOCKERD=off: there is no dockerd to start"),
                    },
                ))),
            );
        };
        let (data, timeout) = (self.s.docker.data, self.s.docker.ready_timeout);
        let beside = self
            .beside
            .lock()
            .expect("beside lock")
            .take()
            .unwrap_or_default();
        let (spawner, slot, events, life) = (
            self.spawner.clone(),
            self.dockerd.clone(),
            self.events.clone(),
            self.life.clone(),
        );
        tokio::spawn(async move {
            if let Some(mut life) = life {
                if let Err(why) = sandboxed::ready(&mut life).await {
                    return Self::send(&events, Event::DockerdFailed(Error::SandboxBuild(why)));
                }
            }
            match dockerd::launch(&plan, data, spawner, timeout, beside).await {
                Ok(d) => {
                    let d = Arc::new(d);
                    *slot.lock().expect("dockerd slot") = Some(d.clone());
                    Self::send(&events, Event::DockerdReady);
                    let status = d.exited().await;
                    Self::send(&events, Event::DockerdDied { status });
                }
                Err(e) => Self::send(&events, Event::DockerdFailed(Error::Dockerd(e))),
            }
        });
    }

    fn register(&self) {
        let (registrar, slot, events, known) = (
            self.registrar.clone(),
            self.registered.clone(),
            self.events.clone(),
            self.known_id,
        );
        tokio::spawn(async move {
            match registrar.register(known).await {
                Ok(reg) => {
                    let r = Registration {
                        runner_id: reg.runner_id,
                        name: reg.name.clone(),
                        configure: matches!(reg.start, Start::Configure { .. }),
                    };
                    *slot.lock().expect("registration slot") = Some(reg);
                    Self::send(&events, Event::Registered(r));
                }
                Err(e) => Self::send(&events, Event::RegisterFailed(Error::Register(e))),
            }
        });
    }

    fn start(&self) -> Option<Start> {
        self.registered
            .lock()
            .expect("registration slot")
            .as_ref()
            .map(|r| r.start.clone())
    }

    fn configure(&self) {
        let start = self.start();
        let (spawner, layout, user, env, events) = (
            self.spawner.clone(),
            self.layout.clone(),
            self.user.clone(),
            self.env.clone(),
            self.events.clone(),
        );
        tokio::spawn(async move {
            let root = &layout.runner_root;
            let status = match start {
                Some(start) => {
                    listener::configure(spawner.as_ref(), root, &user, &env, &start).await
                }
                None => Ok(None),
            };
            match status {
                Ok(Some(st)) if st.code() == Some(0) => Self::send(
                    &events,
                    Event::Configured {
                        runner_id: listener::runner_id_from_dot_runner(&spawner.outside(root)),
                    },
                ),
                other => Self::send(
                    &events,
                    Event::ConfigureFailed(Error::Configure(format!("{other:?}"))),
                ),
            }
        });
    }

    fn start_listener(&mut self) {
        if let Some(w) = self.update_watch.take() {
            w.abort();
        }
        let Some(start) = self.start() else {
            return Self::send(
                &self.events,
                Event::ListenerSpawnFailed(Error::ListenerStart(std::io::Error::other(
                    "no registration to start it with",
                ))),
            );
        };
        let sinks = listener::Sinks {
            events: self.events.clone(),
            versions: self.versions.clone(),
        };
        match listener::spawn_listener(
            self.spawner.as_ref(),
            &self.layout.runner_root,
            &self.user,
            &self.env,
            &start,
            sinks,
        ) {
            Ok(l) => self.listener = Some(l),
            Err(e) => Self::send(
                &self.events,
                Event::ListenerSpawnFailed(Error::ListenerStart(e)),
            ),
        }
    }

    fn stop_listener(&self, grace: Duration) {
        match &self.listener {
            Some(l) => {
                let l = l.clone();
                tokio::spawn(async move { l.stop(Signal::SIGINT, grace).await });
            }
            // Nothing runs: say so, so that the life does not wait for an exit that cannot come.
            None => Self::send(
                &self.events,
                Event::ListenerExited {
                    code: None,
                    status: "not running".into(),
                },
            ),
        }
    }

    fn watch_update(&mut self) {
        let marker: PathBuf = self
            .spawner
            .outside(&self.layout.runner_root.join("update.finished"));
        let events = self.events.clone();
        self.update_watch = Some(tokio::spawn(async move {
            while !marker.exists() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let _ = std::fs::remove_file(&marker);
            Self::send(&events, Event::UpdateFinished);
        }));
    }

    fn deregister(&self, runner_id: u64, within: Duration) {
        let (registrar, events) = (self.registrar.clone(), self.events.clone());
        tokio::spawn(async move {
            let d = match tokio::time::timeout(within, registrar.deregister(runner_id)).await {
                Ok(Ok(ApiDeleted::Deleted)) => Deleted::Deleted,
                Ok(Ok(ApiDeleted::NotFound)) => Deleted::NotFound,
                Ok(Ok(ApiDeleted::Busy)) => Deleted::Busy,
                Ok(Err(e)) => Deleted::Failed(e.to_string()),
                Err(_) => Deleted::TimedOut,
            };
            Self::send(&events, Event::Deregistered(d));
        });
    }

    fn stop_dockerd(&self, grace: Duration) {
        let d = self.dockerd.lock().expect("dockerd slot").clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            if let Some(d) = d {
                let stop = d.stop(grace).await;
                tracing::info!(
                    phase = "dockerd-stopped",
                    "dockerd stopped in {:.2}s ({}), {} orphans killed",
                    stop.took.as_secs_f64(),
                    stop.status,
                    stop.orphans_killed
                );
            }
            Self::send(&events, Event::DockerdStopped);
        });
    }
}

impl Host for RealHost {
    fn perform(&mut self, action: Action) {
        match action {
            Action::StartDockerd => self.start_dockerd(),
            Action::Register => self.register(),
            Action::Record { runner_id, name } => {
                write_record(&self.layout, &Record { runner_id, name })
            }
            Action::ForgetRecord => forget_record(&self.layout),
            Action::Publish(h) => {
                // The machine says Stopping once, when the life ends, after the runner's end:
                // nothing of the life needs its network any more, which goes while sysrunner
                // deregisters and dockerd stops.
                if h == Health::Stopping {
                    if let Some(life) = &self.life {
                        sandboxed::end_network(life);
                    }
                }
                self.publish(h)
            }
            Action::Configure => self.configure(),
            Action::StartListener => self.start_listener(),
            Action::StopListener { grace } => self.stop_listener(grace),
            Action::WatchUpdate => self.watch_update(),
            Action::Deregister { runner_id, within } => self.deregister(runner_id, within),
            Action::StopDockerd { grace } => self.stop_dockerd(grace),
            Action::KillAll => {
                let keep: Vec<i32> = self.life.iter().filter_map(sandboxed::setup_pid).collect();
                let left = reaper::kill_all_children_but(&keep);
                if left > 0 {
                    tracing::warn!("killed {left} processes left behind");
                }
            }
            // The driver ends the life itself.
            Action::Exit => {}
        }
    }
}

#[cfg(test)]
mod tests;
