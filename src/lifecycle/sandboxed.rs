//! The life's sandbox as a life holds it: decided and planned before the life starts (so that a
//! container that cannot have one is known at once, and `LIFE_SANDBOX` says what then), built
//! (beside the registration with `required`; before the life with `auto`, so that a build that
//! fails still leaves the pristine reset), and ended after the life. Until it is built, a
//! spawner that knows it is not there yet stands in; dockerd's start waits for it. The sandbox's
//! own parts are `crate::sandbox`'s; this module owns only that timing.

use super::pristine::RunnerUser;
use crate::config::{LifeSandbox, RunSettings};
use crate::error::Error;
use crate::process::{BoxFut, Proc, Spawner, Spec};
use crate::reaper::Reaper;
use crate::sandbox::{self, Planned, Request, Sandbox};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Where the life's sandbox is.
#[derive(Clone)]
pub enum State {
    Building,
    Ready {
        spawner: Arc<dyn Spawner>,
        /// The sandbox's setup process: sysrunner's child, ended with the sandbox.
        setup_pid: i32,
        /// The life's network, ended as the life ends.
        network: sandbox::Network,
    },
    Failed(String),
}

/// Whether this life gets a sandbox, as LIFE_SANDBOX and the container allow: the request and
/// plan for it, `None` to run the life in the container itself, or the refusal.
pub async fn plan(
    s: &RunSettings,
    report: &crate::assess::Report,
    dockerd: Option<&crate::dockerd::Plan>,
    user: &RunnerUser,
) -> Result<Option<(Request, Planned)>, Error> {
    let setting = s.runner.sandbox;
    if setting == LifeSandbox::Off {
        return Ok(None);
    }
    // DOCKERD=off in a runtime that cannot run dockerd cannot make a life's namespaces either.
    let Some(dockerd) = dockerd else {
        let why = format!(
            "the runtime is {} ({})",
            report.runtime.as_str(),
            report.reasons.join("; ")
        );
        return without_sandbox(setting, &why);
    };
    let req = Request::for_container(
        report.runtime,
        &report.facts,
        dockerd,
        sandbox::Runner {
            dir: s.runner.dir.clone(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            sudoers: s
                .runner
                .sudo
                .then(|| format!("{} ALL=(ALL) NOPASSWD:ALL\n", user.name)),
        },
        s.runner.life_binds.clone(),
        s.docker.data,
    );
    let why = match sandbox::plan_next(&req).await {
        Ok(planned) => return Ok(Some((req, planned))),
        Err(e) => e.to_string(),
    };
    without_sandbox(setting, &why)
}

/// No sandbox can be had, for `why`: the pristine reset with LIFE_SANDBOX's warning, or its
/// refusal.
fn without_sandbox<T>(setting: LifeSandbox, why: &str) -> Result<Option<T>, Error> {
    match sandbox::decide(setting, Some(why)) {
        sandbox::Decision::Refuse(msg) => Err(Error::Sandbox(msg)),
        sandbox::Decision::Reset { warning } => {
            if let Some(w) = warning {
                tracing::warn!(phase = "sandbox", "{w}");
            }
            Ok(None)
        }
        sandbox::Decision::Sandbox => unreachable!("decided with a reason against it"),
    }
}

/// A sandbox being built, or built.
pub struct Slot {
    state: watch::Receiver<State>,
    task: tokio::task::JoinHandle<Option<Sandbox>>,
}

/// Starts building the planned sandbox in the background.
pub fn build(req: Request, planned: Planned, reaper: Reaper) -> Slot {
    let (tx, state) = watch::channel(State::Building);
    let task = tokio::spawn(async move {
        match sandbox::build(&req, planned, &reaper).await {
            Ok(sb) => {
                tracing::info!(
                    phase = "sandbox",
                    life = sb.number,
                    took_ms = sb.took.as_millis() as u64,
                    "built life {} in {:.3}s ({}): its own namespaces, on a fresh overlay root, at {}",
                    sb.number,
                    sb.took.as_secs_f64(),
                    sb.steps
                        .iter()
                        .map(|(n, d)| format!("{n} {:.1} ms", d.as_secs_f64() * 1000.0))
                        .collect::<Vec<_>>()
                        .join(", "),
                    sb.address
                );
                let _ = tx.send(State::Ready {
                    spawner: sb.spawner(),
                    setup_pid: sb.setup_pid(),
                    network: sb.network(),
                });
                Some(sb)
            }
            Err(e) => {
                let _ = tx.send(State::Failed(e.to_string()));
                None
            }
        }
    });
    Slot { state, task }
}

/// Waits until the sandbox is built; `Err` says why it was not.
pub async fn ready(state: &mut watch::Receiver<State>) -> Result<(), String> {
    match state
        .wait_for(|s| !matches!(s, State::Building))
        .await
        .map(|s| s.clone())
    {
        Ok(State::Ready { .. }) => Ok(()),
        Ok(State::Failed(why)) => Err(why),
        Ok(State::Building) | Err(_) => Err("the life's sandbox was never built".into()),
    }
}

impl Slot {
    pub fn state(&self) -> watch::Receiver<State> {
        self.state.clone()
    }

    /// The life's spawner: the sandbox's once it is built.
    pub fn spawner(&self) -> Arc<dyn Spawner> {
        Arc::new(Waiting(self.state.clone()))
    }

    /// Waits for the build to end, then ends the sandbox it built.
    pub async fn end(self, grace: Duration) {
        let Ok(Some(sb)) = self.task.await else {
            return;
        };
        let ended = sb.end(grace).await;
        tracing::info!(
            phase = "sandbox-ended",
            took_ms = ended.took.as_millis() as u64,
            "ended the life's sandbox in {:.3}s (processes {:.3}s, then cgroups and overlay {:.3}s; beside them, waiting for the network's end begun as the life ended, {:.3}s)",
            ended.took.as_secs_f64(),
            ended.life.as_secs_f64(),
            ended.files.as_secs_f64(),
            ended.network.as_secs_f64()
        );
    }
}

/// Begins ending the life's network, if the sandbox was built: nothing of the life needs it once
/// the runner has ended and the life ends (deregistration, dockerd's stop).
pub fn end_network(state: &watch::Receiver<State>) {
    if let State::Ready { network, .. } = &*state.borrow() {
        network.end();
    }
}

/// The sandbox's setup process, once built.
pub fn setup_pid(state: &watch::Receiver<State>) -> Option<i32> {
    match &*state.borrow() {
        State::Ready { setup_pid, .. } => Some(*setup_pid),
        _ => None,
    }
}

/// `path` of the life as sysrunner reaches it, once the sandbox is built.
pub fn outside(state: &watch::Receiver<State>, path: &Path) -> Option<PathBuf> {
    match &*state.borrow() {
        State::Ready { spawner, .. } => Some(spawner.outside(path)),
        _ => None,
    }
}

/// The sandbox's spawner, or an error before it is built (nothing of the life starts before
/// dockerd, which waits for it).
struct Waiting(watch::Receiver<State>);

impl Waiting {
    fn inner(&self) -> Option<Arc<dyn Spawner>> {
        match &*self.0.borrow() {
            State::Ready { spawner, .. } => Some(spawner.clone()),
            _ => None,
        }
    }
}

impl Spawner for Waiting {
    fn spawn(&self, spec: Spec) -> io::Result<Proc> {
        match self.inner() {
            Some(s) => s.spawn(spec),
            None => Err(io::Error::other("the life's sandbox is not built")),
        }
    }

    fn kill_orphans(&self) -> BoxFut<'_, usize> {
        match self.inner() {
            Some(s) => Box::pin(async move { s.kill_orphans().await }),
            None => Box::pin(async { 0 }),
        }
    }

    fn outside(&self, inside: &Path) -> PathBuf {
        match self.inner() {
            Some(s) => s.outside(inside),
            None => inside.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dockerd_waits_for_the_build_and_hears_why_it_failed() {
        let (tx, mut rx) = watch::channel(State::Building);
        let waiter = tokio::spawn(async move { ready(&mut rx).await });
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "returned while the sandbox was building"
        );
        tx.send(State::Failed("cgroupfs vanished".into())).unwrap();
        assert_eq!(waiter.await.unwrap(), Err("cgroupfs vanished".to_string()));

        let (tx, mut rx) = watch::channel(State::Building);
        drop(tx);
        assert!(ready(&mut rx).await.is_err(), "a build that never ends");
    }

    #[test]
    fn nothing_spawns_before_the_sandbox_is_built() {
        let (_tx, rx) = watch::channel(State::Building);
        let w = Waiting(rx.clone());
        let e = w.spawn(Spec::new("/usr/sbin/dockerd")).err().unwrap();
        assert!(e.to_string().contains("not built"), "{e}");
        assert_eq!(setup_pid(&rx), None);
        assert_eq!(outside(&rx, Path::new("/run/docker.sock")), None);
        assert_eq!(
            w.outside(Path::new("/run/docker.sock")),
            Path::new("/run/docker.sock")
        );
    }
}
