//! One life of the container, from validated settings to exit: reap, probe, restore pristine,
//! start dockerd and register at the same time, run the listener until its one job is done, then
//! deregister, stop dockerd and exit, on every path, also after a signal. Owns the order and the
//! budgets; each step's mechanics belong to its module (probe, dockerd, github, runner).

pub mod health;
pub mod listener;
pub mod pristine;
pub use crate::register;
pub mod versions;

use crate::config::RunSettings;
use crate::dockerd::{self, Dockerd, plan::SOCKET};
use crate::exit::Exit;
use crate::github::{Deleted, RealTime};
use crate::reaper::{self, Reaper};
use crate::runner::{AfterExit, State, after_exit};
use health::Published;
use nix::sys::signal::{Signal, kill, killpg};
use pristine::{Layout, RunnerUser};
use register::{Registrar, Start};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
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

/// Why a life ended early.
struct Failed {
    exit: Exit,
    message: String,
}

/// Runs one life. `signals` yields once per SIGTERM/SIGINT: the first stops gracefully (drain,
/// then deregister and stop within STOP_TIMEOUT), the second skips the drain.
pub async fn run(s: RunSettings, mut signals: mpsc::UnboundedReceiver<Signal>) -> Exit {
    let reaper = match Reaper::start() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot become the reaper of orphans: {e}");
            return Exit::Internal;
        }
    };
    let report = crate::assess::assess(Path::new("/"), &s.docker).await;
    let plan = match report.plan() {
        Ok(plan) => plan.clone(),
        Err(unsupported) => {
            tracing::error!(runtime = report.runtime.as_str(), "{unsupported}");
            if let Some(r) = report.remedy {
                tracing::error!("remedy: {r}");
            }
            return Exit::from(&unsupported);
        }
    };
    tracing::info!(
        phase = "probe",
        runtime = report.runtime.as_str(),
        "runtime {}: {}",
        report.runtime.as_str(),
        report.reasons.join("; ")
    );
    for n in &plan.notes {
        tracing::warn!("dockerd: {n}");
    }

    for f in &s.secret_files {
        tracing::debug!("masking {}", f.display());
    }
    for e in pristine::mask_secret_files(&s.secret_files) {
        tracing::warn!("could not mask a secret file, a job may read it: {e}");
    }
    let user = match RunnerUser::lookup(&s.runner.user) {
        Ok(u) => u,
        Err(e) => {
            tracing::error!("{e}");
            return Exit::Usage;
        }
    };
    let registrar = match register::from_settings(&s, Arc::new(RealTime)) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("{e}");
            return Exit::from(&e);
        }
    };
    let layout = Layout::new(&s.runner.dir, &user.home, Path::new("/"));
    let life = Life {
        s: &s,
        reaper,
        layout,
        user,
        registrar,
        started: health::now_epoch(),
        versions: Arc::new(versions::Tracker::default()),
    };
    life.run(plan, &mut signals).await
}

struct Life<'a> {
    s: &'a RunSettings,
    reaper: Reaper,
    layout: Layout,
    user: RunnerUser,
    registrar: Box<dyn Registrar>,
    started: u64,
    versions: Arc<versions::Tracker>,
}

impl Life<'_> {
    /// Records the registration for the next life, in case this one never deregisters.
    fn record(&self, reg: &register::Registered) {
        if let Some(id) = reg.runner_id {
            write_record(
                &self.layout,
                &Record {
                    runner_id: id,
                    name: reg.name.clone(),
                },
            );
        }
    }

    fn published(&self, state: &str) -> Published {
        Published {
            state: state.into(),
            started: self.started,
            startup_allowance_secs: health::allowance(self.s.docker.ready_timeout),
            runner: Some(self.s.runner.name.clone()),
            runner_version: self.versions.current(),
        }
    }

    fn publish(&self, state: &str) {
        health::publish(&self.layout.run_dir, &self.published(state));
    }

    /// Asks GitHub, beside start-up and never on its path, which runner release it offers; the
    /// image's own version comes from the listener's first lines.
    fn check_runner_version(&self) {
        let Some(fetch) = self.registrar.runner_downloads() else {
            return;
        };
        let versions = self.versions.clone();
        tokio::spawn(async move {
            match fetch.await {
                Ok(list) => versions.offered(crate::runner::version::offered(
                    list.iter()
                        .filter(|d| d.os == "linux")
                        .map(|d| d.filename.as_str()),
                    crate::runner::version::runner_arch(),
                )),
                Err(e) => {
                    tracing::warn!("cannot learn which runner release GitHub offers: {e}")
                }
            }
        });
    }

    async fn run(
        self,
        plan: crate::dockerd::Plan,
        signals: &mut mpsc::UnboundedReceiver<Signal>,
    ) -> Exit {
        match pristine::restore(&self.layout, &self.user, self.s.runner.sudo) {
            Ok(r) => {
                tracing::info!(
                    phase = "pristine",
                    "restored a pristine life in {:.2}s (runner directory: {:?})",
                    r.took.as_secs_f64(),
                    r.runner_dir
                );
                for n in r.notes {
                    tracing::info!("{n}");
                }
            }
            Err(e) => {
                tracing::error!("cannot restore a pristine life: {e}");
                return Exit::TempFail;
            }
        }
        self.publish("starting");

        let mut known_id = None;
        if let Some(rec) = read_record(&self.layout)
            && self.registrar.deregisters()
        {
            match self
                .registrar
                .delete_leftover(rec.runner_id, &rec.name)
                .await
            {
                Ok(Some(Deleted::Deleted)) => tracing::info!(
                    runner_id = rec.runner_id,
                    "deleted runner {} that an earlier life left registered",
                    rec.name
                ),
                Ok(Some(Deleted::Busy)) => {
                    tracing::warn!(
                        runner_id = rec.runner_id,
                        "the runner an earlier life left is busy; it will be taken as ours"
                    );
                    known_id = Some(rec.runner_id);
                }
                Ok(_) => tracing::debug!("the runner an earlier life recorded is gone"),
                Err(e) => tracing::warn!(
                    "cannot delete the runner an earlier life left ({e}); `sysrunner prune` can"
                ),
            }
            forget_record(&self.layout);
        }

        self.check_runner_version();
        // dockerd and the registration at the same time: start-up takes the slower of the two.
        let t0 = Instant::now();
        let dockerd_start = async {
            let d = dockerd::launch(
                &plan,
                self.s.docker.data,
                &self.reaper,
                self.s.docker.ready_timeout,
            )
            .await?;
            tracing::info!(
                phase = "dockerd-ready",
                "dockerd ready in {:.2}s",
                t0.elapsed().as_secs_f64()
            );
            Ok::<_, dockerd::LaunchError>(d)
        };
        let registration = async {
            let r = self.registrar.register(known_id).await;
            if let Ok(reg) = &r {
                tracing::info!(
                    phase = "registered",
                    runner_id = reg.runner_id,
                    "registered {} ({}) in {:.2}s",
                    reg.name,
                    self.registrar.kind(),
                    t0.elapsed().as_secs_f64()
                );
            }
            r
        };
        tokio::pin!(dockerd_start, registration);
        let (mut started, mut registered) = (None, None);
        // Set by a signal during start-up: the stop budget's end. The registration is deleted as
        // soon as it exists, so a slow dockerd cannot keep it alive past the budget.
        let mut stop_at: Option<Instant> = None;
        let mut deleted = false;
        let timed_out = loop {
            if started.is_some() && registered.is_some() {
                break false;
            }
            tokio::select! {
                d = &mut dockerd_start, if started.is_none() => started = Some(d),
                r = &mut registration, if registered.is_none() => {
                    if let Ok(reg) = &r {
                        self.record(reg);
                    }
                    registered = Some(r);
                }
                Some(sig) = signals.recv(), if stop_at.is_none() => {
                    tracing::info!("{sig} while starting: stopping once start-up settles");
                    stop_at = Some(Instant::now() + self.s.timeouts.stop);
                }
                _ = sleep_until(stop_at) => break true,
            }
            if let (Some(end), Some(Ok(reg)), false) = (stop_at, &registered, deleted) {
                self.deregister_ours(reg, end).await;
                deleted = true;
            }
        };
        if timed_out {
            tracing::error!("start-up did not settle within STOP_TIMEOUT: killing every child");
            reaper::kill_all_children();
            return Exit::Ok;
        }
        tracing::info!(
            phase = "started",
            "start-up took {:.2}s",
            t0.elapsed().as_secs_f64()
        );
        let settled = (
            started.expect("start-up settled"),
            registered.expect("start-up settled"),
        );
        let (dockerd, mut reg) = match settled {
            (Ok(d), Ok(r)) => (d, r),
            (d, r) => {
                let end = stop_at.unwrap_or_else(|| Instant::now() + self.s.timeouts.stop);
                if let Ok(reg) = &r
                    && !deleted
                {
                    self.deregister_ours(reg, end).await;
                }
                if let Ok(d) = &d {
                    d.stop(remaining(end), &self.reaper).await;
                }
                return match (d, r) {
                    (Err(e), _) => {
                        tracing::error!("dockerd did not start: {e}");
                        Exit::from(&e)
                    }
                    (_, Err(e)) => {
                        tracing::error!("registration failed: {e}");
                        Exit::from(&e)
                    }
                    _ => unreachable!(),
                };
            }
        };
        if let Some(end) = stop_at {
            return self.finish(&reg, &dockerd, end, Exit::Ok).await;
        }

        let result = self.supervise(&mut reg, &dockerd, signals).await;
        let (exit, end) = match result {
            Ok(end) => (Exit::Ok, end),
            Err(f) => {
                tracing::error!("{}", f.message);
                (f.exit, None)
            }
        };
        let end = end.unwrap_or_else(|| Instant::now() + self.s.timeouts.stop);
        self.finish(&reg, &dockerd, end, exit).await
    }

    /// From a running listener to its end: the job, restarts, updates, signals, dockerd's death.
    /// After a signal, returns the end of the stop budget it started: STOP_TIMEOUT from the
    /// signal when idle, from the end of the drain when busy. Deregistering, stopping the runner
    /// and stopping dockerd all fit in that one budget.
    async fn supervise(
        &self,
        reg: &mut register::Registered,
        dockerd: &Dockerd,
        signals: &mut mpsc::UnboundedReceiver<Signal>,
    ) -> Result<Option<Instant>, Failed> {
        let env = crate::runner::env::runner_env(
            std::env::vars(),
            &self.user.name,
            &self.user.home.to_string_lossy(),
            &format!("unix://{SOCKET}"),
        );
        let root = &self.layout.runner_root;
        if let Start::Configure { .. } = &reg.start {
            let status =
                listener::configure(&self.reaper, root, &self.user, &env, &reg.start).await;
            match status {
                Ok(Some(st)) if st.code() == Some(0) => {}
                other => {
                    return Err(Failed {
                        exit: Exit::TempFail,
                        message: format!("config.sh failed: {other:?}"),
                    });
                }
            }
            reg.runner_id = listener::runner_id_from_dot_runner(root);
            self.record(reg);
        }

        announce(&State::Starting);
        let (state_tx, state_rx) = watch::channel(State::Starting);
        self.spawn_state_publisher(state_rx.clone());
        let spawn = |tx: watch::Sender<State>| {
            let sinks = listener::Sinks {
                state: tx,
                versions: self.versions.clone(),
            };
            listener::spawn_listener(&self.reaper, root, &self.user, &env, &reg.start, sinks)
                .map_err(|e| Failed {
                    exit: Exit::TempFail,
                    message: format!("cannot start the runner: {e}"),
                })
        };
        let mut l = spawn(state_tx.clone())?;
        let mut restarts = 0;
        loop {
            tokio::select! {
                status = &mut l.exit => {
                    let status = status.map_err(|_| Failed { exit: Exit::Internal, message: "lost the listener's exit status".into() })?;
                    match after_exit(status.code(), restarts, self.s.pass_deprecated_exit) {
                        AfterExit::Done => {
                            tracing::info!("runner done ({status}): {}", describe(&state_rx.borrow()));
                            return Ok(None);
                        }
                        AfterExit::Restart { after, reason } => {
                            restarts += 1;
                            tracing::warn!("runner: {reason}; restart {restarts} of {} in {}s", crate::runner::MAX_RESTARTS, after.as_secs());
                            tokio::select! {
                                _ = tokio::time::sleep(after) => {}
                                Some(_) = signals.recv() => return Ok(None),
                            }
                            set_state(&state_tx, State::Starting);
                            l = spawn(state_tx.clone())?;
                        }
                        AfterExit::AwaitUpdate => {
                            set_state(&state_tx, State::Updating);
                            let t = Instant::now();
                            wait_for_file(&root.join("update.finished"), Duration::from_secs(300)).await;
                            let _ = std::fs::remove_file(root.join("update.finished"));
                            tracing::warn!("the runner updated itself in {:.0}s: the image's pinned runner is behind; bump RUNNER_VERSION", t.elapsed().as_secs_f64());
                            set_state(&state_tx, State::Starting);
                            l = spawn(state_tx.clone())?;
                        }
                        AfterExit::Fail(f) => return Err(Failed { exit: Exit::from(&f), message: f.to_string() }),
                    }
                }
                status = dockerd.exited() => {
                    stop_listener(&mut l, Duration::from_secs(5)).await;
                    return Err(Failed { exit: Exit::TempFail, message: format!("dockerd died ({status}) while the runner was {}: stopped the runner", state_rx.borrow().as_str()) });
                }
                Some(sig) = signals.recv() => {
                    let stop = self.s.timeouts.stop;
                    let mut end = Instant::now() + stop;
                    let busy = matches!(*state_rx.borrow(), State::Busy { .. });
                    let idle = !busy && self.try_deregister_idle(reg, end).await;
                    if idle {
                        tracing::info!("{sig} while idle: deregistered; stopping the runner");
                    } else {
                        let drain = self.s.timeouts.drain;
                        tracing::info!("{sig} while busy: letting the job run up to DRAIN_TIMEOUT ({}s)", drain.as_secs());
                        tokio::select! {
                            st = &mut l.exit => {
                                tracing::info!("the job ended during the drain ({:?})", st.ok());
                                return Ok(Some(Instant::now() + stop));
                            }
                            _ = tokio::time::sleep(drain) => {}
                            Some(_) = signals.recv() => tracing::warn!("second signal: skipping the drain"),
                        }
                        tracing::info!("cancelling the job (SIGINT to the listener)");
                        end = Instant::now() + stop;
                    }
                    // Half of what is left for the runner to stop (and report a cancelled job);
                    // the rest for deregistering and stopping dockerd.
                    stop_listener(&mut l, remaining(end) / 2).await;
                    return Ok(Some(end));
                }
            }
        }
    }

    /// On a signal while idle: delete the runner first, so GitHub gives it no job while it stops.
    /// `false` when it just took one (422) or cannot be deleted now.
    async fn try_deregister_idle(&self, reg: &register::Registered, end: Instant) -> bool {
        if !self.registrar.deregisters() {
            return true;
        }
        let Some(id) = reg.runner_id else { return true };
        match tokio::time::timeout(remaining(end) / 2, self.registrar.deregister(id)).await {
            Ok(Ok(Deleted::Deleted | Deleted::NotFound)) => {
                forget_record(&self.layout);
                true
            }
            Ok(Ok(Deleted::Busy)) => {
                tracing::info!("GitHub says the runner is running a job: treating it as busy");
                false
            }
            Ok(Err(e)) => {
                tracing::warn!("deregistration failed: {e}");
                true
            }
            Err(_) => true,
        }
    }

    /// Deletes the runner if sysrunner registered it (not a JIT config's, which its issuer
    /// removes) and GitHub knows its id.
    async fn deregister_ours(&self, reg: &register::Registered, end: Instant) {
        if self.registrar.deregisters()
            && let Some(id) = reg.runner_id
        {
            self.deregister(id, end).await;
        }
    }

    /// Deletes the runner within the budget, retrying while GitHub says it is still busy.
    async fn deregister(&self, id: u64, end: Instant) -> bool {
        loop {
            let left = remaining(end);
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, self.registrar.deregister(id)).await {
                Ok(Ok(Deleted::Deleted)) => {
                    tracing::info!(phase = "deregistered", runner_id = id, "deregistered");
                    forget_record(&self.layout);
                    return true;
                }
                Ok(Ok(Deleted::NotFound)) => {
                    tracing::info!(
                        phase = "deregistered",
                        runner_id = id,
                        "GitHub already removed the ephemeral runner"
                    );
                    forget_record(&self.layout);
                    return true;
                }
                Ok(Ok(Deleted::Busy)) => {
                    tokio::time::sleep(Duration::from_millis(250).min(remaining(end))).await
                }
                Ok(Err(e)) => {
                    tracing::warn!("deregistration failed: {e}");
                    break;
                }
                Err(_) => break,
            }
        }
        tracing::warn!(
            runner_id = id,
            "runner {id} is still registered: the next life or `sysrunner prune` deletes it"
        );
        false
    }

    /// Deregisters (ours only), stops dockerd, kills what is left; returns `exit`.
    async fn finish(
        &self,
        reg: &register::Registered,
        dockerd: &Dockerd,
        end: Instant,
        exit: Exit,
    ) -> Exit {
        self.publish("stopping");
        self.deregister_ours(reg, end).await;
        let stop = dockerd
            .stop(remaining(end).max(Duration::from_secs(1)), &self.reaper)
            .await;
        tracing::info!(
            phase = "dockerd-stopped",
            "dockerd stopped in {:.2}s ({}), {} orphans killed",
            stop.took.as_secs_f64(),
            stop.status,
            stop.orphans_killed
        );
        let left = reaper::kill_all_children();
        if left > 0 {
            tracing::warn!("killed {left} processes left behind");
        }
        self.publish("done");
        tracing::info!(phase = "exit", code = exit.code(), "exit {}", exit.code());
        exit
    }

    /// Publishes the runner's state, and the version check's result, whenever either changes.
    fn spawn_state_publisher(&self, mut rx: watch::Receiver<State>) {
        let dir = self.layout.run_dir.clone();
        let p = self.published("");
        let tracker = self.versions.clone();
        let mut versions = tracker.subscribe();
        tokio::spawn(async move {
            loop {
                let state = rx.borrow_and_update().clone();
                versions.mark_unchanged();
                health::publish(
                    &dir,
                    &Published {
                        state: state.as_str().into(),
                        runner_version: tracker.current(),
                        ..p.clone()
                    },
                );
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    r = versions.changed() => if r.is_err() { return },
                }
            }
        });
    }
}

/// Logs a state change of the runner; the one place that does, so every change is logged once.
fn announce(s: &State) {
    tracing::info!(
        phase = s.phase(),
        state = s.as_str(),
        "runner {}",
        describe(s)
    );
}

fn set_state(tx: &watch::Sender<State>, next: State) {
    announce(&next);
    tx.send_replace(next);
}

fn describe(s: &State) -> String {
    match s {
        State::Busy { job } => format!("busy with {job}"),
        State::Done { job, result } => format!("job {job} completed: {result}"),
        other => other.as_str().to_string(),
    }
}

fn remaining(end: Instant) -> Duration {
    end.saturating_duration_since(Instant::now())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// SIGINT, so the runner cancels its job and reports it; its process group is killed if it
/// has not exited within `grace`. Returns once the listener has exited.
async fn stop_listener(l: &mut listener::Listener, grace: Duration) {
    let _ = kill(l.pid, Signal::SIGINT);
    if tokio::time::timeout(grace, &mut l.exit).await.is_err() {
        tracing::warn!(
            "runner did not stop within {}s: killing its process group",
            grace.as_secs()
        );
        let _ = killpg(l.pid, Signal::SIGKILL);
        let _ = (&mut l.exit).await;
    }
}

async fn wait_for_file(path: &Path, limit: Duration) {
    let end = Instant::now() + limit;
    while !path.exists() && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
