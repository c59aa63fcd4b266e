//! The inner dockerd: a pure plan from the probe's facts and verdict ([`plan`]), the effects that
//! prepare the system for it ([`effects`]), and its process ([`process`]); [`launch`] does the
//! three in order for `run` and `dockerd-check`. Owns dockerd's files (daemon.json, pid files,
//! socket, data root and its lock) and process. Reads the probe's facts but never probes; knows
//! nothing of GitHub or the runner.

pub mod effects;
pub mod leftovers;
pub mod plan;
pub mod process;

pub use effects::PrepareError;
pub use plan::{Containerd, Iptables, Plan, PreStep, Profile, StorageDriver, Version};
pub use process::{
    Dockerd, StartError, StopReport, installed_containerd, installed_version,
    installed_version_via, ping,
};

use crate::config::DataPolicy;
use crate::process::{BoxFut, Spawner};
use crate::registry::Registry;
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

/// What [`launch`] does beside containerd's start, before it spawns dockerd: each takes tens of
/// milliseconds that containerd's start (≈60 ms here) hides.
#[derive(Default)]
pub struct Beside {
    /// The plan again, made once dockerd's version is known: `run` plans without it (reading it
    /// is a `dockerd --version`, 50–80 ms of Go's start-up), as for a current dockerd. When its
    /// daemon.json differs (an older dockerd), that one is written before dockerd starts.
    pub replan: Option<BoxFut<'static, Option<Plan>>>,
    /// Removes what an earlier dockerd left in the network namespace this one will run in
    /// ([`leftovers`]); it reports its own outcome.
    pub sweep: Option<BoxFut<'static, ()>>,
    /// Where dockerd will pull from ([`crate::registry::resolve`], started with the life): known
    /// before dockerd is spawned, it goes into daemon.json; known later, daemon.json is rewritten
    /// and dockerd reloads it once it answers. [`launch`] returns only once it is known.
    pub registry: Option<tokio::task::JoinHandle<crate::registry::Registry>>,
}

/// A task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Prepares the system as `plan` says, then starts dockerd and waits until it answers `/_ping`.
/// The preparation blocks (it empties the data root, and the cgroup v2 nesting sleeps between
/// retries), so it runs on tokio's blocking pool: `run` starts dockerd beside the registration on
/// a single-threaded runtime, and must keep answering signals meanwhile. What `beside` holds runs
/// while containerd starts, and is done before dockerd is spawned.
pub async fn launch(
    plan: &Plan,
    data: DataPolicy,
    spawner: Arc<dyn Spawner>,
    ready_timeout: Duration,
    beside: Beside,
) -> Result<Dockerd, LaunchError> {
    let owned = plan.clone();
    // Where dockerd will run: this container's root, or a life sandbox's seen through its init.
    let root = spawner.outside(std::path::Path::new("/"));
    let system = move || -> Box<dyn effects::System + Send> {
        if root == std::path::Path::new("/") {
            Box::new(effects::RealSystem)
        } else {
            Box::new(effects::RootedSystem { root: root.clone() })
        }
    };
    let sys = system.clone();
    let prepared =
        tokio::task::spawn_blocking(move || effects::prepare(&owned, data, &*sys())).await;
    let log = match prepared {
        Ok(log) => log?,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => return Err(LaunchError::Cancelled(e)),
    };
    for line in log {
        tracing::debug!("dockerd: {line}");
    }
    let Beside {
        replan,
        sweep,
        registry,
    } = beside;
    let mut registry = registry.map(AbortOnDrop);
    // The plan whose daemon.json dockerd starts with, and the registry outcome known by then.
    let started_with: Arc<std::sync::Mutex<(Plan, Option<Registry>)>> =
        Arc::new(std::sync::Mutex::new((plan.clone(), None)));
    let early = started_with.clone();
    let mut beside = AbortOnDrop(tokio::spawn(async move {
        let replan = async {
            match replan {
                Some(r) => r.await,
                None => None,
            }
        };
        let sweep = async {
            if let Some(s) = sweep {
                s.await;
            }
        };
        tokio::join!(replan, sweep).0
    }));
    let planned = plan.clone();
    let writer = system.clone();
    let pending = registry.as_mut();
    // Dropped unawaited (containerd failed first), the work beside it is cancelled; if it
    // panicked, dockerd does not start and containerd is stopped.
    let before_dockerd = async move {
        let replanned = (&mut beside.0).await.map_err(|e| {
            StartError::Prepare(format!("the work beside containerd's start failed: {e}"))
        })?;
        let mut target = match replanned.filter(|p| p.daemon_json != planned.daemon_json) {
            Some(new) => {
                for n in new.notes.iter().filter(|n| !planned.notes.contains(n)) {
                    tracing::warn!("dockerd: {n}");
                }
                tracing::info!("dockerd's version asks for another daemon.json: rewrote it");
                new
            }
            None => planned.clone(),
        };
        let known = match pending.filter(|h| h.0.is_finished()) {
            Some(h) => Some((&mut h.0).await.unwrap_or_else(check_failed)),
            None => None,
        };
        if let Some(r) = &known {
            target = target.with_mirrors(&r.mirrors());
        }
        let changed = target.daemon_json != planned.daemon_json;
        *early.lock().expect("plan lock") = (target.clone(), known);
        if !changed {
            return Ok(());
        }
        tokio::task::spawn_blocking(move || effects::write_config(&target, &*writer()))
            .await
            .map_err(|e| StartError::Prepare(e.to_string()))?
            .map_err(|e| StartError::Prepare(e.to_string()))
    };
    let mut dockerd = Dockerd::start_with(plan, spawner, ready_timeout, before_dockerd).await?;
    let (running, known) = std::mem::replace(
        &mut *started_with.lock().expect("plan lock"),
        (plan.clone(), None),
    );
    let r = match (known, registry) {
        (Some(r), _) => r,
        (None, None) => return Ok(dockerd),
        // Not known when dockerd was spawned: wait for it (the check has its own bound), then
        // have dockerd reload a daemon.json with the mirror.
        (None, Some(mut h)) => {
            let r = (&mut h.0).await.unwrap_or_else(check_failed);
            let now = running.with_mirrors(&r.mirrors());
            if now.daemon_json == running.daemon_json {
                r
            } else {
                let written =
                    tokio::task::spawn_blocking(move || effects::write_config(&now, &*system()))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|w| w.map_err(|e| e.to_string()));
                let applied = match written {
                    Ok(()) => dockerd.reload_mirrors(&r.mirrors(), RELOAD_LIMIT).await,
                    Err(e) => Err(format!("cannot write daemon.json with the mirror: {e}")),
                };
                match applied {
                    Ok(()) => {
                        tracing::info!(
                            "the registry cache answered after dockerd's start: dockerd reloaded its daemon.json"
                        );
                        r
                    }
                    // dockerd goes on without the mirror: say so, not that it has one.
                    Err(reason) => Registry::Direct {
                        cache: r.mirrors().first().cloned(),
                        reason,
                    },
                }
            }
        }
    };
    log_registry(&r);
    dockerd.registry = Some(r);
    Ok(dockerd)
}

/// How long dockerd may take to apply a mirror it reloads (SIGHUP, then `/info` lists it): the
/// most a cache answering late adds to DOCKER_REGISTRY_CACHE_TIMEOUT.
pub const RELOAD_LIMIT: Duration = Duration::from_secs(2);

/// The cache's check ended without an outcome (it panicked, or was cancelled): pull directly.
fn check_failed(e: tokio::task::JoinError) -> Registry {
    Registry::Direct {
        cache: None,
        reason: format!("the registry cache's check failed: {e}"),
    }
}

/// The life's one line on where its pulls go.
fn log_registry(r: &Registry) {
    let text = r.human();
    match r {
        Registry::Direct { cache: Some(c), .. } => {
            tracing::warn!(registry = r.word(), cache = %c, "registry: {text}")
        }
        Registry::Cache { url, .. } => {
            tracing::info!(registry = r.word(), cache = %url, "registry: {text}")
        }
        _ => tracing::info!(registry = r.word(), "registry: {text}"),
    }
}
