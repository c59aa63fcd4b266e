//! The runtime probe: reads facts about this container through a root path, decides whether it is
//! sysbox, another user namespace, privileged, a host or unsupported, and reports it with the
//! dockerd plan. Reads only; the live checks undo what they try. Knows nothing of GitHub.

mod facts;
mod live;
pub mod mountinfo;
mod verdict;

pub use facts::{
    CgroupVersion, DATA_ROOT, Facts, INITIAL_PID_NS, INITIAL_USER_NS, IdRange, capture, read_facts,
};
pub use live::{Live, RouteMtu};
pub use verdict::{REQUIRED_CAPS, Runtime, Verdict, decide, missing_caps, remedy};

use crate::config::DockerSettings;
use crate::dockerd::plan::{self, Plan, PlanInput, Version};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Everything `sysrunner probe` reports, and what `run` decides on.
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
    pub runner_version: Option<crate::runner::version::RunnerVersions>,
}

/// Where the live cgroup test makes its directory: inside our own cgroup.
fn own_cgroup_dir(facts: &Facts) -> Option<PathBuf> {
    let path = facts.cgroup.path.as_deref()?.trim_start_matches('/');
    match facts.cgroup.version? {
        CgroupVersion::V2 => Some(Path::new("/sys/fs/cgroup").join(path)),
        CgroupVersion::V1 => Some(Path::new("/sys/fs/cgroup/pids").join(path)),
    }
}

/// The installed dockerd's version, if there is one on PATH.
pub fn dockerd_version() -> Option<Version> {
    let bin = which::which("dockerd").ok()?;
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()?;
    Version::parse(&String::from_utf8_lossy(&out.stdout))
}

/// Probes below `root`. With `root == "/"` the live checks run too (MTU, mount, cgroup), except on
/// a host: there the verdict is already certain and nothing is tried.
pub async fn probe(
    root: &Path,
    docker: &DockerSettings,
    version: Option<Version>,
    proxy_env: &BTreeMap<String, String>,
) -> Report {
    let facts = read_facts(root);
    let live = if root == Path::new("/") && facts.pid_namespace.initial != Some(true) {
        let dir = (facts.euid == Some(0))
            .then(|| own_cgroup_dir(&facts))
            .flatten();
        Some(live::check(dir).await)
    } else {
        None
    };
    report(facts, live, docker, version, proxy_env)
}

/// The pure part: a report from facts.
pub fn report(
    facts: Facts,
    live: Option<Live>,
    docker: &DockerSettings,
    version: Option<Version>,
    proxy_env: &BTreeMap<String, String>,
) -> Report {
    let Verdict { runtime, reasons } = decide(&facts, live.as_ref());
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
        },
    );
    Report {
        runtime,
        reasons,
        remedy: remedy(runtime),
        facts,
        live,
        dockerd_version: version,
        dockerd,
        runner_version: None,
    }
}

impl Report {
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
