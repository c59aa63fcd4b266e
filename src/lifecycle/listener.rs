//! The runner's processes as the lifecycle runs them: `config.sh` (config mode) and
//! `bin/Runner.Listener run`, as the runner user in their own process group, through the life's
//! [`Spawner`], with output forwarded to our log line by line and the markers turned into events.

use super::machine::Event;
use super::pristine::RunnerUser;
use super::register::Start;
use super::versions::Tracker;
use crate::process::{Handle, Spawner, Spec, User};
use crate::reaper::ExitStatus;
use crate::runner::{Marker, markers};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};

/// The listener process: a handle to signal it and its exit, watched. Cloning shares the same
/// process.
#[derive(Clone)]
pub struct Listener {
    handle: Handle,
    exit: watch::Receiver<Option<ExitStatus>>,
}

impl Listener {
    pub fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    async fn exited(&self) {
        let mut rx = self.exit.clone();
        // An error means the watcher is gone, which happens only once the process has exited.
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// `signal` (SIGINT: the runner cancels its job and reports it), then `grace` for the runner
    /// to exit; after that its whole process group is killed. Returns once it has exited.
    pub async fn stop(&self, signal: Signal, grace: Duration) {
        if self.has_exited() {
            return;
        }
        self.handle.signal(signal);
        if tokio::time::timeout(grace, self.exited()).await.is_err() {
            tracing::warn!(
                "runner did not stop within {}s: killing its process group",
                grace.as_secs()
            );
            self.handle.kill_group();
            self.exited().await;
        }
    }
}

/// What runs as the runner user: its supplementary groups computed here (the `docker` group
/// grants the socket), the environment exactly `env`, in `cwd`.
fn as_user(
    program: &Path,
    user: &RunnerUser,
    env: &BTreeMap<String, String>,
    cwd: &Path,
) -> io::Result<Spec> {
    let name = std::ffi::CString::new(user.name.clone())
        .map_err(|_| io::Error::other("user name has a NUL"))?;
    let groups = nix::unistd::getgrouplist(&name, user.gid).map_err(io::Error::from)?;
    let mut spec = Spec::new(program);
    spec.env = env.clone();
    spec.cwd = Some(cwd.to_path_buf());
    spec.user = Some(User {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups: groups.iter().map(|g| g.as_raw()).collect(),
    });
    Ok(spec)
}

/// Where the listener's output goes besides the log: its markers, as events of the life, and
/// the version it says it is.
#[derive(Clone)]
pub struct Sinks {
    pub events: mpsc::UnboundedSender<Event>,
    pub versions: Arc<Tracker>,
}

/// Forwards a pipe to the log line by line; with `sinks`, every marker becomes an event, in the
/// order the runner printed them.
fn forward<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    reader: R,
    stream: &'static str,
    sinks: Option<Sinks>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "runner", stream, "{line}");
            if let (Some(sinks), Some(m)) = (&sinks, markers::parse(&line)) {
                match m {
                    Marker::Version(v) => sinks.versions.image(&v),
                    m => {
                        let _ = sinks.events.send(Event::Marker(m));
                    }
                }
            }
        }
    })
}

/// How long the listener's output may go on after it exited (a grandchild that keeps the pipe
/// open, say) before its exit is reported anyway.
const OUTPUT_AFTER_EXIT: Duration = Duration::from_millis(500);

/// Spawns `cmd` through the reaper with its output forwarded. With `sinks`, the exit is reported
/// as [`Event::ListenerExited`] once the output has been read to its end (the job's result line
/// comes before the exit that follows it), or [`OUTPUT_AFTER_EXIT`] after the exit.
fn spawn_forwarded(
    spawner: &dyn Spawner,
    spec: Spec,
    sinks: Option<Sinks>,
) -> io::Result<(Listener, oneshot::Receiver<ExitStatus>)> {
    let child = spawner.spawn(spec)?;
    let mut readers = Vec::new();
    if let Some(out) = child.stdout {
        readers.push(forward(
            crate::process::reader(out)?,
            "stdout",
            sinks.clone(),
        ));
    }
    if let Some(err) = child.stderr {
        readers.push(forward(
            crate::process::reader(err)?,
            "stderr",
            sinks.clone(),
        ));
    }
    let (tx, rx) = watch::channel(None);
    let (done_tx, done_rx) = oneshot::channel();
    let exit = child.exit;
    tokio::spawn(async move {
        let Ok(status) = exit.await else { return };
        let _ = tx.send(Some(status));
        let drained = futures_util::future::join_all(readers);
        let _ = tokio::time::timeout(OUTPUT_AFTER_EXIT, drained).await;
        if let Some(s) = sinks {
            let _ = s.events.send(Event::ListenerExited {
                code: status.code(),
                status: status.to_string(),
            });
        }
        let _ = done_tx.send(status);
    });
    Ok((
        Listener {
            handle: child.handle,
            exit: rx,
        },
        done_rx,
    ))
}

/// Runs `config.sh` with the registration token in its environment and waits for it.
pub async fn configure(
    spawner: &dyn Spawner,
    runner_root: &Path,
    user: &RunnerUser,
    env: &BTreeMap<String, String>,
    start: &Start,
) -> io::Result<Option<ExitStatus>> {
    let Start::Configure { token, args } = start else {
        return Ok(None);
    };
    let mut env = env.clone();
    env.insert(
        "ACTIONS_RUNNER_INPUT_TOKEN".into(),
        token.expose().to_string(),
    );
    let mut spec = as_user(&runner_root.join("config.sh"), user, &env, runner_root)?;
    spec.args = args.clone();
    let (_, exit) = spawn_forwarded(spawner, spec, None)?;
    Ok(exit.await.ok())
}

/// Starts `bin/Runner.Listener run` directly, so its real exit code is seen (run.sh hides it).
pub fn spawn_listener(
    spawner: &dyn Spawner,
    runner_root: &Path,
    user: &RunnerUser,
    env: &BTreeMap<String, String>,
    start: &Start,
    sinks: Sinks,
) -> io::Result<Listener> {
    let mut env = env.clone();
    if let Start::Jit(config) = start {
        env.insert(
            "ACTIONS_RUNNER_INPUT_JITCONFIG".into(),
            config.expose().to_string(),
        );
    }
    let mut spec = as_user(
        &runner_root.join("bin/Runner.Listener"),
        user,
        &env,
        runner_root,
    )?;
    spec.args = vec!["run".into()];
    Ok(spawn_forwarded(spawner, spec, Some(sinks))?.0)
}

/// The runner id `config.sh` wrote into `.runner` (`agentId`).
pub fn runner_id_from_dot_runner(runner_root: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(runner_root.join(".runner")).ok()?;
    // .runner may start with a UTF-8 byte-order mark.
    let v: serde_json::Value = serde_json::from_str(text.trim_start_matches('\u{feff}')).ok()?;
    v.get("agentId")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Markers reach the life in the order the runner printed them, each once: `Listening`
    /// followed at once by `Running job` must not hide the first (a watch of the latest state
    /// would).
    #[test]
    fn markers_become_events_in_order_and_the_version_goes_to_the_tracker() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let versions = Arc::new(Tracker::default());
            let out: &'static [u8] = b"Current runner version: '2.336.0'\n\
                2026-11-28 03:00:00Z: Listening for Jobs\n\
                2026-11-28 03:00:01Z: Running job: build\n\
                2026-11-28 03:00:02Z: Job build completed with result: Succeeded\n";
            forward(
                out,
                "stdout",
                Some(Sinks {
                    events: tx,
                    versions: versions.clone(),
                }),
            )
            .await
            .unwrap();
            let mut got = Vec::new();
            while let Ok(Event::Marker(m)) = rx.try_recv() {
                got.push(m);
            }
            assert_eq!(
                got,
                [
                    Marker::Listening,
                    Marker::JobStarted("build".into()),
                    Marker::JobCompleted {
                        job: "build".into(),
                        result: "Succeeded".into()
                    }
                ]
            );
            assert_eq!(versions.current().image.as_deref(), Some("2.336.0"));
        });
    }
}
