//! The verdict: which runtime this is, decided from facts alone (pure). It requires what dockerd
//! needs (capabilities, writable cgroups, working mounts), not a bit-exact "all capabilities",
//! and uses the brand (sysbox, other user namespace, privileged) for the report and the profile
//! (docs/runtimes.md says why). Knows nothing of how dockerd is then configured.

use super::facts::{Facts, SysboxMount};
use super::live::Live;
use caps::Capability;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// sysbox: a user namespace, full capabilities, sysboxfs.
    Sysbox,
    /// Another user namespace with full capabilities (rootless podman --privileged, LXC/Incus
    /// nesting, a namespace sandbox); run like sysbox.
    Userns,
    /// The initial user namespace, full capabilities, writable cgroupfs: `--privileged`.
    Privileged,
    /// The initial pid namespace: not a container. `run` refuses, it would wipe the host's docker.
    Host,
    /// dockerd cannot run here; the reasons say why.
    Unsupported,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Sysbox => "sysbox",
            Runtime::Userns => "userns",
            Runtime::Privileged => "privileged",
            Runtime::Host => "host",
            Runtime::Unsupported => "unsupported",
        }
    }

    /// dockerd runs here (with the profile that matches).
    pub fn supported(self) -> bool {
        matches!(
            self,
            Runtime::Sysbox | Runtime::Userns | Runtime::Privileged
        )
    }

    /// In a user namespace: dockerd needs no pre-steps and must not raise hard limits.
    pub fn namespaced(self) -> bool {
        matches!(self, Runtime::Sysbox | Runtime::Userns)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub runtime: Runtime,
    /// Why: the signals that decided it, or, for unsupported and host, what is missing.
    pub reasons: Vec<String>,
}

/// What dockerd itself uses (mounts, networks) plus the capabilities it hands to a default inner
/// container: runc refuses to start a container whose capabilities are not in our bounding set.
pub const REQUIRED_CAPS: &[Capability] = &[
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_NET_ADMIN,
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

pub fn missing_caps(effective: u64) -> Vec<Capability> {
    REQUIRED_CAPS
        .iter()
        .copied()
        .filter(|c| effective & c.bitmask() == 0)
        .collect()
}

pub fn decide(facts: &Facts, live: Option<&Live>) -> Verdict {
    if facts.pid_namespace.initial == Some(true) {
        return Verdict {
            runtime: Runtime::Host,
            reasons: vec![
                "this process is in the initial pid namespace: a host, not a container; `run` would take over the host's /var/lib/docker".into(),
            ],
        };
    }

    let mut missing = Vec::new();
    match facts.euid {
        Some(0) => {}
        Some(uid) => missing.push(format!(
            "not root (uid {uid}): dockerd needs root in the container; drop `user:` from the service"
        )),
        None => missing.push("cannot read /proc/self/status".into()),
    }
    let lacking = missing_caps(facts.caps.effective);
    if !lacking.is_empty() {
        let names: Vec<String> = lacking.iter().map(|c| c.to_string()).collect();
        missing.push(format!(
            "missing capabilities {} (CapEff {:016x}): the container runs with default capabilities",
            names.join(", "),
            facts.caps.effective
        ));
    }
    let ro_sysboxfs: Vec<&SysboxMount> = facts.sysboxfs.iter().filter(|m| !m.rw).collect();
    if !ro_sysboxfs.is_empty() {
        missing.push(format!(
            "sysboxfs is read-only on {} : sysbox runs in restricted mode",
            ro_sysboxfs
                .iter()
                .map(|m| m.mount_point.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    match facts.cgroup.version {
        None => missing.push("no cgroupfs mounted under /sys/fs/cgroup".into()),
        Some(_) if !facts.cgroup.rw => missing.push(
            "cgroupfs is mounted read-only: dockerd cannot create cgroups for containers".into(),
        ),
        Some(_) => {}
    }
    if let Some(live) = live {
        if let Some(e) = &live.mount_error {
            missing.push(format!(
                "mounting a tmpfs failed ({e}): dockerd needs mount(2)"
            ));
        }
        if let Some(e) = &live.cgroup_error {
            missing.push(format!("creating a cgroup failed ({e})"));
        }
    }
    if !missing.is_empty() {
        return Verdict {
            runtime: Runtime::Unsupported,
            reasons: missing,
        };
    }

    let ns = &facts.user_namespace;
    let map = ns
        .uid_map
        .iter()
        .map(|r| format!("{} {} {}", r.inside, r.outside, r.count))
        .collect::<Vec<_>>()
        .join("; ");
    match ns.initial {
        Some(false) if !facts.sysboxfs.is_empty() => Verdict {
            runtime: Runtime::Sysbox,
            reasons: vec![
                format!("user namespace (uid_map {map})"),
                format!(
                    "sysboxfs mounted on {}",
                    facts.sysboxfs.iter().map(|m| m.mount_point.as_str()).collect::<Vec<_>>().join(", ")
                ),
                "capabilities and cgroups dockerd needs are present".into(),
            ],
        },
        Some(false) => Verdict {
            runtime: Runtime::Userns,
            reasons: vec![
                format!("user namespace (uid_map {map}) without sysboxfs: rootless podman --privileged, LXC/Incus nesting or a namespace sandbox; run like sysbox"),
                "capabilities and cgroups dockerd needs are present".into(),
            ],
        },
        Some(true) => Verdict {
            runtime: Runtime::Privileged,
            reasons: vec![
                "initial user namespace with the capabilities dockerd needs and writable cgroupfs: a --privileged container".into(),
            ],
        },
        None => Verdict {
            runtime: Runtime::Unsupported,
            reasons: vec!["cannot tell the user namespace: /proc/self/ns/user and /proc/self/uid_map are unreadable".into()],
        },
    }
}

/// How to run sysrunner where it works, for unsupported and host verdicts.
pub fn remedy(runtime: Runtime) -> Option<&'static str> {
    match runtime {
        Runtime::Unsupported => Some(
            "Run the container under sysbox (recommended): `runtime: sysbox-runc` in compose, as compose.sysbox.yml does, \
or `runtimeClassName: sysbox-runc` in a Kubernetes pod spec. Without sysbox: `privileged: true`, as compose.privileged.yml does \
(a job can then take the host).",
        ),
        Runtime::Host => Some(
            "sysrunner run is a container entrypoint: start it in a container, e.g. `docker compose -f compose.sysbox.yml up` \
(`runtime: sysbox-runc`), `docker compose -f compose.privileged.yml up`, or a Kubernetes pod with `runtimeClassName: sysbox-runc`.",
        ),
        _ => None,
    }
}
