//! The inner dockerd: a pure plan from the probe's facts and verdict ([`plan`]), the effects that
//! prepare the system for it ([`effects`]), and its process ([`process`]); [`launch`] does the
//! three in order for `run` and `dockerd-check`. Owns dockerd's files (daemon.json, pid files,
//! socket, data root and its lock) and process. Reads the probe's facts but never probes; knows
//! nothing of GitHub or the runner.

pub mod effects;
pub mod plan;
pub mod process;

pub use effects::PrepareError;
pub use plan::{Containerd, Iptables, Plan, PreStep, Profile, StorageDriver, Version};
pub use process::{Dockerd, StartError, StopReport, installed_containerd, installed_version, ping};

use crate::config::DataPolicy;
use crate::process::Spawner;
use std::sync::Arc;
use std::time::Duration;

/// Why dockerd could not be brought up. Every cause ends the life with a restart worth trying
/// (a fresh container gets a fresh data root and fresh pid files) except a locked data root,
/// which needs a volume per runner; the exit code is `crate::exit`'s decision.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Getting the system ready failed: a pre-step, a stale dockerd still running, the data root.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// dockerd itself did not come up.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The preparation's thread was cancelled (the runtime is shutting down).
    #[error("the preparation for dockerd was cancelled: {0}")]
    Cancelled(tokio::task::JoinError),
}

/// Prepares the system as `plan` says, then starts dockerd and waits until it answers `/_ping`.
/// The preparation blocks (it empties the data root, and the cgroup v2 nesting sleeps between
/// retries), so it runs on tokio's blocking pool: `run` starts dockerd beside the registration on
/// a single-threaded runtime, and must keep answering signals meanwhile.
pub async fn launch(
    plan: &Plan,
    data: DataPolicy,
    spawner: Arc<dyn Spawner>,
    ready_timeout: Duration,
) -> Result<Dockerd, LaunchError> {
    let owned = plan.clone();
    // Where dockerd will run: this container's root, or a life sandbox's seen through its init.
    let root = spawner.outside(std::path::Path::new("/"));
    let prepared = tokio::task::spawn_blocking(move || {
        if root == std::path::Path::new("/") {
            effects::prepare(&owned, data, &effects::RealSystem)
        } else {
            effects::prepare(&owned, data, &effects::RootedSystem { root })
        }
    })
    .await;
    let log = match prepared {
        Ok(log) => log?,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => return Err(LaunchError::Cancelled(e)),
    };
    for line in log {
        tracing::debug!("dockerd: {line}");
    }
    Ok(Dockerd::start(plan, spawner, ready_timeout).await?)
}
