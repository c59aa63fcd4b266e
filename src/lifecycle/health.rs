//! Health: the lifecycle publishes its state under /run/sysrunner/, and `sysrunner healthcheck`
//! (the image's HEALTHCHECK) reads it and pings dockerd. The judgement is pure.

pub use super::machine::Health;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const STATE_FILE: &str = "state.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Published {
    pub state: Health,
    /// Epoch seconds when this life started.
    pub started: u64,
    /// How long starting or updating may take before it counts as unhealthy.
    pub startup_allowance_secs: u64,
    pub runner: Option<String>,
    /// The image's runner against the newest GitHub offers (`outdated` once both are known).
    #[serde(default)]
    pub runner_version: crate::runner::version::RunnerVersions,
    /// dockerd's socket as sysrunner's container reaches it: the life sandbox's
    /// (`/proc/<pid>/root/run/docker.sock`), or `None` for the container's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_socket: Option<std::path::PathBuf>,
    /// DOCKERD=off: there is no dockerd to ping.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub without_dockerd: bool,
    /// Where this life's dockerd pulls Docker Hub images from, once dockerd is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<crate::registry::Registry>,
}

pub fn now_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Writes the state atomically (write, then rename), so a reader never sees half a file.
pub fn publish(dir: &Path, p: &Published) {
    let tmp = dir.join(".state.json.tmp");
    let ok = serde_json::to_vec(p)
        .ok()
        .and_then(|b| std::fs::write(&tmp, b).ok())
        .and_then(|()| std::fs::rename(&tmp, dir.join(STATE_FILE)).ok());
    if ok.is_none() {
        tracing::debug!("could not publish state to {}", dir.display());
    }
}

/// Healthy: dockerd answers (where the life has one: `dockerd_answers` is true without) and the
/// runner listens or works; starting and updating count as healthy for the allowance. `Err` says
/// why not.
pub fn judge(p: Option<&Published>, dockerd_answers: bool, now: u64) -> Result<(), String> {
    let Some(p) = p else {
        return Err(
            "no state published under /run/sysrunner (is sysrunner run the entrypoint?)".into(),
        );
    };
    let within = now.saturating_sub(p.started) <= p.startup_allowance_secs;
    match p.state {
        Health::Starting | Health::Updating if within => Ok(()),
        Health::Starting | Health::Updating => Err(format!(
            "still {} after {}s (allowance {}s)",
            p.state.as_str(),
            now.saturating_sub(p.started),
            p.startup_allowance_secs
        )),
        Health::Listening | Health::Busy | Health::Done if dockerd_answers => Ok(()),
        Health::Listening | Health::Busy | Health::Done => {
            Err("dockerd does not answer /_ping".into())
        }
        Health::Stopping => Err("runner is stopping".into()),
    }
}

/// `sysrunner healthcheck`.
pub async fn healthcheck(run_dir: &Path) -> Result<(), String> {
    let p: Option<Published> = std::fs::read(run_dir.join(STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let socket = p
        .as_ref()
        .and_then(|p| p.docker_socket.clone())
        .unwrap_or_else(|| crate::dockerd::plan::SOCKET.into());
    let without = p.as_ref().is_some_and(|p| p.without_dockerd);
    let pinged = without || crate::dockerd::ping(&socket).await;
    judge(p.as_ref(), pinged, now_epoch())
}

/// The allowance: DOCKERD_READY_TIMEOUT + 60 s.
pub fn allowance(ready_timeout: Duration) -> u64 {
    ready_timeout.as_secs() + 60
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(state: &str, started: u64) -> Published {
        Published {
            state: serde_json::from_value(serde_json::json!(state)).unwrap(),
            started,
            startup_allowance_secs: 120,
            runner: None,
            runner_version: Default::default(),
            without_dockerd: false,
            docker_socket: None,
            registry: None,
        }
    }

    #[test]
    fn listening_or_busy_with_dockerd_is_healthy() {
        assert!(judge(Some(&p("listening", 0)), true, 10_000).is_ok());
        assert!(judge(Some(&p("busy", 0)), true, 10_000).is_ok());
        assert!(
            judge(Some(&p("busy", 0)), false, 10_000)
                .unwrap_err()
                .contains("dockerd")
        );
    }

    #[test]
    fn starting_is_healthy_only_within_the_allowance() {
        assert!(judge(Some(&p("starting", 1000)), false, 1120).is_ok());
        assert!(judge(Some(&p("updating", 1000)), false, 1100).is_ok());
        assert!(
            judge(Some(&p("starting", 1000)), true, 1121)
                .unwrap_err()
                .contains("allowance")
        );
    }

    #[test]
    fn no_state_or_stopping_is_unhealthy() {
        assert!(judge(None, true, 0).is_err());
        assert!(judge(Some(&p("stopping", 0)), true, 1).is_err());
    }

    /// DOCKERD=off: a listening runner is healthy without a dockerd to answer; with one planned,
    /// the same state without an answering dockerd is not.
    #[tokio::test]
    async fn without_dockerd_nothing_is_pinged() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = p("listening", now_epoch());
        state.docker_socket = Some(dir.path().join("no-such.sock"));
        publish(dir.path(), &state);
        assert!(healthcheck(dir.path()).await.is_err());
        state.without_dockerd = true;
        publish(dir.path(), &state);
        assert_eq!(healthcheck(dir.path()).await, Ok(()));
    }
}
