//! The assessment of this container that `probe`, `run` and `dockerd-check` share: the probe's facts
//! and verdict, dockerd's version, and the dockerd plan that follows, in one [`Report`]. Owns that
//! report and its two renderings (JSON through serde, and the short human one); sits above `probe`
//! and `dockerd` so that neither needs the other's types beyond the facts and verdict the plan
//! reads. Decides nothing itself: the verdict is `probe`'s, the plan `dockerd`'s.

use crate::config::DockerSettings;
use crate::dockerd::plan::{self, Plan, PlanInput, Version};
use crate::probe::{self, Facts, Live, Runtime};
use crate::runner::version::RunnerVersions;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Everything `sysrunner probe` reports, and what `run` and `dockerd-check` decide on. Its field
/// names are `probe --json`'s, which users and tests read.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub runtime: Runtime,
    pub reasons: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<&'static str>,
    pub facts: Facts,
    /// `None` when the facts came from a captured tree (`--root`).
    pub live: Option<Live>,
    pub dockerd_version: Option<Version>,
    /// `None` where dockerd does not start.
    pub dockerd: Option<Plan>,
    /// The image's actions/runner and the newest GitHub offers, when the caller looked (`probe`
    /// does: the release's `--version`, and what a running life learnt from GitHub).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner_version: Option<RunnerVersions>,
    /// The life sandbox the next life would get (`probe` on a live container looks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<crate::sandbox::Report>,
    /// Where the inner dockerd pulls Docker Hub images from (`probe` on a live container: what
    /// the running life decided, else the cache asked now); `None` without a dockerd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<crate::registry::Registry>,
}

/// Assesses the container below `root` (`/` in production; a captured tree skips the live
/// checks) with the installed dockerd and this process's proxy variables: the one call `probe`,
/// `run` and `dockerd-check` make.
pub async fn assess(root: &Path, docker: &DockerSettings) -> Report {
    let seen = probe::observe(root).await;
    report(
        seen.facts,
        seen.live,
        docker,
        crate::dockerd::installed_version(),
        crate::dockerd::installed_containerd(),
        &plan::proxy_env_of_process(),
    )
}

/// [`assess`] where the reaper runs (`dockerd-check`): dockerd's version read through it, beside
/// the probe's observation.
pub async fn assess_reaped<C: crate::process::Commands>(
    root: &Path,
    docker: &DockerSettings,
    commands: &C,
) -> Report {
    let (seen, version) = tokio::join!(
        probe::observe(root),
        crate::dockerd::installed_version_via(commands)
    );
    report(
        seen.facts,
        seen.live,
        docker,
        version,
        crate::dockerd::installed_containerd(),
        &plan::proxy_env_of_process(),
    )
}

/// `run`'s assessment: without dockerd's version, so that nothing waits for a `dockerd --version`
/// (50–80 ms of Go's start-up) before containerd starts. The plan is a current dockerd's, as for
/// any dockerd whose version is unknown; [`Report::replan`] makes it again once the version is
/// read, and `dockerd::launch` writes that one's daemon.json if it differs.
pub async fn assess_unversioned(root: &Path, docker: &DockerSettings) -> Report {
    let seen = probe::observe(root).await;
    report(
        seen.facts,
        seen.live,
        docker,
        None,
        crate::dockerd::installed_containerd(),
        &plan::proxy_env_of_process(),
    )
}

/// The pure part: a report from facts, live results and the plan's other inputs.
pub fn report(
    facts: Facts,
    live: Option<Live>,
    docker: &DockerSettings,
    version: Option<Version>,
    containerd: Option<std::path::PathBuf>,
    proxy_env: &BTreeMap<String, String>,
) -> Report {
    let probe::Verdict { runtime, reasons } = probe::decide(&facts, live.as_ref());
    let detected_mtu = live
        .as_ref()
        .and_then(|l| l.default_route.as_ref())
        .map(|r| r.mtu);
    let dockerd = plan::plan(
        runtime,
        &facts,
        &PlanInput {
            docker,
            version,
            detected_mtu,
            proxy_env,
            containerd,
        },
    );
    Report {
        runtime,
        reasons,
        remedy: probe::remedy(runtime),
        facts,
        live,
        dockerd_version: version,
        dockerd,
        runner_version: None,
        registry: None,
        sandbox: None,
    }
}

/// dockerd cannot run here: the verdict's runtime, its reasons, and how to run sysrunner where
/// it works. A restart in the same place cannot help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("sysrunner cannot run dockerd here ({}): {}", runtime.as_str(), reasons.join("; "))]
pub struct Unsupported {
    pub runtime: Runtime,
    pub reasons: Vec<String>,
    pub remedy: Option<&'static str>,
}

impl Report {
    /// The dockerd plan for the same container, now that dockerd's version is known (see
    /// [`assess_unversioned`]); `None` where dockerd does not start.
    pub fn replan(&self, docker: &DockerSettings, version: Option<Version>) -> Option<Plan> {
        let containerd = self
            .dockerd
            .as_ref()
            .and_then(|p| p.containerd.as_ref())
            .map(|c| c.binary.clone());
        report(
            self.facts.clone(),
            self.live.clone(),
            docker,
            version,
            containerd,
            &plan::proxy_env_of_process(),
        )
        .dockerd
    }

    /// The plan, or why there is none.
    pub fn plan(&self) -> Result<&Plan, Unsupported> {
        self.dockerd.as_ref().ok_or_else(|| Unsupported {
            runtime: self.runtime,
            reasons: self.reasons.clone(),
            remedy: self.remedy,
        })
    }

    /// The short human report.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "runtime: {}", self.runtime.as_str());
        for r in &self.reasons {
            let _ = writeln!(s, "  - {r}");
        }
        if let Some(remedy) = self.remedy {
            let _ = writeln!(s, "remedy: {remedy}");
        }
        match &self.dockerd {
            None => {
                let _ = writeln!(s, "dockerd: will not start here");
            }
            Some(p) => {
                let _ = writeln!(
                    s,
                    "dockerd: {:?} profile, storage {}, iptables {:?}, mtu {}, cgroup driver cgroupfs, socket {} (group {})",
                    p.profile,
                    p.storage_driver,
                    p.iptables,
                    p.mtu
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| "1500 (default)".into()),
                    plan::SOCKET,
                    plan::SOCKET_GROUP,
                );
                let _ = writeln!(
                    s,
                    "containerd: {}",
                    match &p.containerd {
                        Some(c) => format!(
                            "started by sysrunner before dockerd ({}, socket {})",
                            c.binary.display(),
                            c.socket.display()
                        ),
                        None => "started by dockerd (no containerd on PATH)".into(),
                    }
                );
                for step in &p.pre_steps {
                    let _ = writeln!(
                        s,
                        "  before start: {}",
                        serde_json::to_string(step).unwrap_or_default()
                    );
                }
                for n in &p.notes {
                    let _ = writeln!(s, "  note: {n}");
                }
            }
        }
        if let Some(v) = &self.runner_version {
            let image = v.image.as_deref().unwrap_or("unknown");
            let offered = match (&v.offered, v.outdated) {
                (Some(o), Some(true)) => format!("GitHub offers {o}: outdated, rebuild the image"),
                (Some(o), _) => format!("GitHub offers {o}"),
                (None, _) => "GitHub's newest not known (a running life asks it)".into(),
            };
            let _ = writeln!(s, "runner: actions/runner {image} ({offered})");
        }
        if let Some(r) = &self.registry {
            let _ = writeln!(s, "registry: {}", r.human());
        }
        if let Some(sb) = &self.sandbox {
            match (&sb.plan, &sb.unavailable) {
                (Some(p), _) => {
                    let _ = writeln!(
                        s,
                        "life sandbox: available (life {}: overlay root, upper layer on {}, link {} with MTU {}, cgroup {})",
                        p.number,
                        crate::sandbox::VOLUME,
                        p.net.net,
                        p.net.mtu,
                        p.cgroup
                            .life_dirs()
                            .first()
                            .map_or("none".into(), |d| d.display().to_string())
                    );
                }
                (None, Some(why)) => {
                    let _ = writeln!(s, "life sandbox: unavailable: {why}");
                }
                (None, None) => {}
            }
        }
        if let Some(l) = &self.live {
            if let Some(r) = &l.default_route {
                let _ = writeln!(
                    s,
                    "network: default route via {} (MTU {})",
                    r.interface, r.mtu
                );
            } else if let Some(e) = &l.mtu_error {
                let _ = writeln!(s, "network: {e}");
            }
        }
        s
    }
}
