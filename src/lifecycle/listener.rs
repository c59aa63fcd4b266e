//! The runner's processes as the lifecycle runs them: `config.sh` (config mode) and
//! `bin/Runner.Listener run`, as the runner user in their own process group, through the reaper,
//! with output forwarded to our log line by line and the markers turned into states.

use super::pristine::RunnerUser;
use super::register::Start;
use super::versions::Tracker;
use crate::reaper::{ExitStatus, Reaper};
use crate::runner::{Marker, State, markers};
use nix::unistd::{Gid, Pid};
use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{oneshot, watch};

pub struct Listener {
    pub pid: Pid,
    pub exit: oneshot::Receiver<ExitStatus>,
}

/// A command that drops to the runner user in the child: supplementary groups (computed here, in
/// the parent: the `docker` group grants the socket), gid, uid. std's own uid/gid would clear the
/// supplementary groups, so the switch is done by hand before exec.
fn as_user(
    program: &Path,
    user: &RunnerUser,
    env: &BTreeMap<String, String>,
    cwd: &Path,
) -> io::Result<Command> {
    let name = std::ffi::CString::new(user.name.clone())
        .map_err(|_| io::Error::other("user name has a NUL"))?;
    let groups: Vec<Gid> = nix::unistd::getgrouplist(&name, user.gid).map_err(io::Error::from)?;
    let (uid, gid) = (user.uid, user.gid);
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .envs(env)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: only async-signal-safe calls (setgroups, setgid, setuid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setgroups(&groups).map_err(io::Error::from)?;
            nix::unistd::setgid(gid).map_err(io::Error::from)?;
            nix::unistd::setuid(uid).map_err(io::Error::from)?;
            Ok(())
        });
    }
    Ok(cmd)
}

/// Where the listener's markers go: its state, and the version it says it is.
#[derive(Clone)]
pub struct Sinks {
    pub state: watch::Sender<State>,
    pub versions: Arc<Tracker>,
}

/// Forwards a pipe to the log, turning markers into state changes.
fn forward<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    reader: R,
    stream: &'static str,
    sinks: Option<Sinks>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "runner", stream, "{line}");
            if let (Some(sinks), Some(m)) = (&sinks, markers::parse(&line)) {
                let tx = &sinks.state;
                if let Marker::Version(v) = &m {
                    sinks.versions.image(v);
                }
                // Logged here, at the marker, not by a watcher of the channel: a watch keeps only
                // the latest value, so a job that starts right after `Listening` would hide it.
                tx.send_if_modified(|s| {
                    let next = s.clone().on(&m);
                    let changed = next != *s;
                    if changed {
                        super::announce(&next);
                    }
                    *s = next;
                    changed
                });
            }
        }
    });
}

fn spawn_forwarded(
    reaper: &Reaper,
    cmd: &mut Command,
    sinks: Option<Sinks>,
) -> io::Result<Listener> {
    let child = reaper.spawn(cmd)?;
    if let Some(out) = child.stdout {
        forward(
            tokio::process::ChildStdout::from_std(out)?,
            "stdout",
            sinks.clone(),
        );
    }
    if let Some(err) = child.stderr {
        forward(tokio::process::ChildStderr::from_std(err)?, "stderr", sinks);
    }
    Ok(Listener {
        pid: child.pid,
        exit: child.exit,
    })
}

/// Runs `config.sh` with the registration token in its environment and waits for it.
pub async fn configure(
    reaper: &Reaper,
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
    let mut cmd = as_user(&runner_root.join("config.sh"), user, &env, runner_root)?;
    cmd.args(args);
    let l = spawn_forwarded(reaper, &mut cmd, None)?;
    Ok(l.exit.await.ok())
}

/// Starts `bin/Runner.Listener run` directly, so its real exit code is seen (run.sh hides it).
pub fn spawn_listener(
    reaper: &Reaper,
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
    let mut cmd = as_user(
        &runner_root.join("bin/Runner.Listener"),
        user,
        &env,
        runner_root,
    )?;
    cmd.arg("run");
    spawn_forwarded(reaper, &mut cmd, Some(sinks))
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
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The runner prints `Listening for Jobs` and, a moment later, `Running job`: both states are
    /// logged even when nothing else runs in between (a watcher of the channel would see only the
    /// last one).
    #[test]
    fn every_state_a_marker_reaches_is_logged_in_order() {
        let log = Captured::default();
        let w = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, mut rx) = watch::channel(State::Starting);
            let out: &'static [u8] = b"2026-11-28 03:00:00Z: Connected to GitHub\n\
                2026-11-28 03:00:00Z: Listening for Jobs\n\
                2026-11-28 03:00:01Z: Running job: build\n\
                2026-11-28 03:00:02Z: Job build completed with result: Succeeded\n";
            let versions = Arc::new(Tracker::default());
            forward(
                out,
                "stdout",
                Some(Sinks {
                    state: tx,
                    versions,
                }),
            );
            rx.wait_for(|s| matches!(s, State::Done { .. }))
                .await
                .unwrap();
        });
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let states: Vec<&str> = text
            .lines()
            .filter_map(|l| {
                l.split_once("sysrunner::lifecycle: runner ")
                    .map(|(_, r)| r)
            })
            .map(|r| r.split(" phase=").next().unwrap_or(r))
            .collect();
        assert_eq!(
            states,
            [
                "listening",
                "busy with build",
                "job build completed: Succeeded"
            ],
            "{text}"
        );
    }
}
