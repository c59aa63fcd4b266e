//! The dockerd plan: what to do before dockerd starts, its `daemon.json`, arguments and
//! environment, decided from the probe's verdict and facts, the settings and dockerd's version.
//! The decisions live here: the profile, the storage driver, the iptables backend, the inner MTU
//! (DOCKER_MTU, else the default route's). The facts they rest on: docs/runtimes.md. Pure: it
//! reads nothing and changes nothing.

use crate::config::{DockerSettings, ImageStore};
use crate::probe::{CgroupVersion, Facts, Runtime};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub const SOCKET: &str = "/var/run/docker.sock";
pub const CONFIG_FILE: &str = "/etc/docker/daemon.json";
pub const PID_FILE: &str = "/var/run/docker.pid";
pub const CONTAINERD_PID_FILE: &str = "/var/run/docker/containerd/containerd.pid";
pub const CONTAINERD_SOCKET: &str = "/var/run/docker/containerd/containerd.sock";
/// The config of the containerd sysrunner starts itself (see [`Containerd`]).
pub const CONTAINERD_CONFIG: &str = "/run/sysrunner/containerd.toml";
/// containerd's runtime state, where dockerd would keep its managed containerd's.
pub const CONTAINERD_STATE: &str = "/var/run/docker/containerd/daemon";
/// Group that owns the socket; the runner user is in it.
pub const SOCKET_GROUP: &str = "docker";
/// Where the privileged profile moves the processes already in the root cgroup (cgroup v2).
pub const CGROUP_INIT: &str = "/sys/fs/cgroup/init";
/// Directory of `iptables*` links to the chosen backend, first on dockerd's PATH.
pub const IPTABLES_DIR: &str = "/run/sysrunner/iptables";
/// statfs magic of overlayfs: a data root on it cannot hold overlay2 layers.
pub const OVERLAYFS_MAGIC: i64 = 0x794c_7630;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// sysbox and other user namespaces: nothing before dockerd.
    Namespaced,
    /// `--privileged`: moby's hack/dind steps.
    Privileged,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum PreStep {
    /// Mount securityfs on /sys/kernel/security; a failure is ignored (AppArmor may be absent).
    MountSecurityfs,
    /// cgroup v2 with us in the root cgroup: move every process into `/sys/fs/cgroup/init`, then
    /// enable every controller in `cgroup.subtree_control`, retrying while processes race in.
    NestCgroupV2 {
        into: String,
        controllers: Vec<String>,
    },
    /// `mount --make-rshared /`, so mounts dockerd makes propagate into containers.
    MakeRshared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Iptables {
    Legacy,
    Nft,
}

impl Iptables {
    /// The suffix of the Debian alternatives (`iptables-legacy`, `iptables-nft`).
    pub fn as_str(self) -> &'static str {
        match self {
            Iptables::Legacy => "legacy",
            Iptables::Nft => "nft",
        }
    }
}

/// dockerd's `storage-driver`, named as daemon.json names it. With the classic image store it is
/// a graph driver; with the containerd store, a snapshotter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageDriver {
    /// The classic store on a data root that can hold overlay layers.
    Overlay2,
    /// The containerd store's overlay snapshotter.
    Overlayfs,
    /// The classic store on an overlayfs data root, through FUSE.
    FuseOverlayfs,
    /// The classic store on an overlayfs data root without `/dev/fuse`: copies every layer.
    Vfs,
    /// The containerd store on an overlayfs data root: copies every layer.
    Native,
}

impl StorageDriver {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageDriver::Overlay2 => "overlay2",
            StorageDriver::Overlayfs => "overlayfs",
            StorageDriver::FuseOverlayfs => "fuse-overlayfs",
            StorageDriver::Vfs => "vfs",
            StorageDriver::Native => "native",
        }
    }
}

impl fmt::Display for StorageDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub profile: Profile,
    pub pre_steps: Vec<PreStep>,
    /// Where dockerd keeps its data: the path whose filesystem the probe reported. `daemon.json`
    /// says the same (and so does `probe --json`, through it); the lock file and the emptying for
    /// DOCKER_DATA=ephemeral use this.
    #[serde(skip)]
    pub data_root: PathBuf,
    pub storage_driver: StorageDriver,
    pub iptables: Iptables,
    pub mtu: Option<u32>,
    pub daemon_json: serde_json::Value,
    pub args: Vec<String>,
    /// Added to dockerd's environment (proxy variables for pulls; `container=docker`).
    pub env: BTreeMap<String, String>,
    /// containerd started by sysrunner before dockerd; `None`: dockerd starts its own.
    pub containerd: Option<Containerd>,
    /// Never raise the hard open-files limit in a user namespace: it fails there.
    pub raise_nofile: bool,
    /// Things an operator should know (slow storage, MTU not applied to new networks, …).
    pub notes: Vec<String>,
}

impl Plan {
    /// The same plan with dockerd's `registry-mirrors` as given (none: no key): the pull-through
    /// cache's outcome, known only once the cache answered or did not.
    pub fn with_mirrors(&self, mirrors: &[String]) -> Plan {
        let mut p = self.clone();
        if let Some(obj) = p.daemon_json.as_object_mut() {
            if mirrors.is_empty() {
                obj.remove("registry-mirrors");
            } else {
                obj.insert("registry-mirrors".into(), json!(mirrors));
            }
        }
        p
    }
}

/// containerd, started by sysrunner: dockerd's own start launches containerd and dials it before
/// its socket exists, and gRPC then backs off for about a second before the next try (dockerd's
/// log: "containerd successfully booted in 0.02s", then nothing for ~0.95 s); its stop waits as
/// long for the containerd it manages. Started first, its socket awaited, then handed to dockerd
/// (`"containerd"` in daemon.json), the same dockerd answers `/_ping` in about a quarter of the
/// time. The config is the one dockerd writes for its managed containerd (its root under the data
/// root, its state and socket under `/var/run/docker/containerd`, no CRI plugin), so images,
/// snapshots and DOCKER_DATA behave as before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Containerd {
    pub binary: PathBuf,
    pub args: Vec<String>,
    pub config_file: PathBuf,
    pub config: String,
    pub socket: PathBuf,
}

impl Containerd {
    fn plan(binary: PathBuf, data_root: &str) -> Containerd {
        let root = Path::new(data_root).join("containerd/daemon");
        let config = format!(
            "version = 2\n\
             root = {root:?}\n\
             state = {CONTAINERD_STATE:?}\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             \n\
             [grpc]\n  address = {CONTAINERD_SOCKET:?}\n\
             \n\
             [ttrpc]\n  address = \"\"\n\
             \n\
             [debug]\n  address = \"\"\n",
            root = root.display().to_string(),
        );
        Containerd {
            binary,
            args: vec!["--config".into(), CONTAINERD_CONFIG.into()],
            config_file: PathBuf::from(CONTAINERD_CONFIG),
            config,
            socket: PathBuf::from(CONTAINERD_SOCKET),
        }
    }
}

/// dockerd's version, as `dockerd --version` prints it (`Docker version 26.1.5+dfsg1, build …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl Version {
    pub fn parse(output: &str) -> Option<Version> {
        let rest = output.split("version").nth(1)?.trim_start();
        let mut nums = rest
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u32>());
        Some(Version {
            major: nums.next()?.ok()?,
            minor: nums.next()?.ok()?,
        })
    }
}

/// Inputs of the plan that are not probe facts.
pub struct PlanInput<'a> {
    pub docker: &'a DockerSettings,
    pub version: Option<Version>,
    /// The default route's MTU, when the probe could read it.
    pub detected_mtu: Option<u32>,
    /// Proxy variables of our environment (HTTP_PROXY, https_proxy, NO_PROXY, …).
    pub proxy_env: &'a BTreeMap<String, String>,
    /// The installed `containerd`, which sysrunner then starts itself ([`Containerd`]).
    pub containerd: Option<PathBuf>,
}

/// The proxy variables dockerd passes on to its pulls.
pub const PROXY_VARS: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// The proxy variables of this process's environment, for dockerd's pulls.
pub fn proxy_env_of_process() -> BTreeMap<String, String> {
    PROXY_VARS
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect()
}

/// `None` for host and unsupported runtimes: dockerd does not start there.
pub fn plan(runtime: Runtime, facts: &Facts, input: &PlanInput) -> Option<Plan> {
    if !runtime.supported() {
        return None;
    }
    let profile = if runtime.namespaced() {
        Profile::Namespaced
    } else {
        Profile::Privileged
    };
    let mut notes = Vec::new();

    let mut pre_steps = Vec::new();
    if profile == Profile::Privileged {
        pre_steps.push(PreStep::MountSecurityfs);
        if facts.cgroup.version == Some(CgroupVersion::V2)
            && facts.cgroup.path.as_deref() == Some("/")
        {
            pre_steps.push(PreStep::NestCgroupV2 {
                into: CGROUP_INIT.to_string(),
                controllers: facts.cgroup.controllers.clone(),
            });
        }
        pre_steps.push(PreStep::MakeRshared);
    }

    let on_overlay = facts.data_root.fstype.as_deref() == Some("overlay");
    // The containerd image store needs dockerd >= 24 (a feature flag there, the default on a
    // fresh data root from 29); below that the classic store is the only one.
    let containerd_store = input.docker.image_store == ImageStore::Containerd
        && input.version.is_none_or(|v| v.major >= 24);
    if input.docker.image_store == ImageStore::Containerd && !containerd_store {
        notes.push(
            "DOCKER_IMAGE_STORE=containerd needs dockerd >= 24: using the classic image store"
                .into(),
        );
    }
    let storage_driver = match (containerd_store, on_overlay, facts.dev_fuse) {
        (false, false, _) => StorageDriver::Overlay2,
        (true, false, _) => StorageDriver::Overlayfs,
        (false, true, true) => {
            notes.push(format!(
                "{} is on overlayfs (no volume mounted there): using fuse-overlayfs; mount a volume on it for overlay2",
                facts.data_root.path
            ));
            StorageDriver::FuseOverlayfs
        }
        (false, true, false) => {
            notes.push(format!(
                "{} is on overlayfs and /dev/fuse is missing: using vfs, which copies every layer and is slow; mount a volume on {}",
                facts.data_root.path, facts.data_root.path
            ));
            StorageDriver::Vfs
        }
        (true, true, _) => {
            // containerd's fuse-overlayfs snapshotter is a separate plugin the image lacks.
            notes.push(format!(
                "{} is on overlayfs: the containerd image store falls back to its native snapshotter, which copies every layer and is slow; mount a volume on {}",
                facts.data_root.path, facts.data_root.path
            ));
            StorageDriver::Native
        }
    };

    let iptables = if facts.iptables_legacy_tables.is_empty() {
        Iptables::Nft
    } else {
        Iptables::Legacy
    };

    let mtu = input.docker.mtu.or(input.detected_mtu);
    let mut daemon = json!({
        "hosts": [format!("unix://{SOCKET}")],
        "group": SOCKET_GROUP,
        "tls": false,
        "data-root": facts.data_root.path,
        "pidfile": PID_FILE,
        "storage-driver": storage_driver,
        "exec-opts": ["native.cgroupdriver=cgroupfs"],
        // Always explicit: Docker >= 29 would pick the containerd store for every fresh data root.
        "features": {"containerd-snapshotter": containerd_store},
    });
    let obj = daemon.as_object_mut().expect("a JSON object");
    match mtu {
        Some(m) => {
            obj.insert("mtu".into(), json!(m));
            if input.version.is_none_or(|v| v.major >= 24) {
                obj.insert(
                    "default-network-opts".into(),
                    json!({"bridge": {"com.docker.network.driver.mtu": m.to_string()}}),
                );
            } else {
                notes.push(format!(
                    "dockerd {} is older than 24: networks the runner creates for job and service containers keep MTU 1500 (the default bridge gets {m})",
                    input.version.map(|v| format!("{}.{}", v.major, v.minor)).unwrap_or_default()
                ));
            }
        }
        None => notes.push(
            "MTU not detected and DOCKER_MTU not set: inner networks use 1500, which breaks TLS behind a smaller link; set DOCKER_MTU".into(),
        ),
    }
    let containerd = input
        .containerd
        .clone()
        .map(|bin| Containerd::plan(bin, &facts.data_root.path));
    if containerd.is_some() {
        obj.insert("containerd".into(), json!(CONTAINERD_SOCKET));
    }
    if !input.docker.registry_mirrors.is_empty() {
        obj.insert(
            "registry-mirrors".into(),
            json!(input.docker.registry_mirrors),
        );
    }
    let proxy = |upper: &str| {
        input
            .proxy_env
            .get(upper)
            .or_else(|| input.proxy_env.get(&upper.to_ascii_lowercase()))
            .cloned()
    };
    let mut proxies = serde_json::Map::new();
    for (var, key) in [
        ("HTTP_PROXY", "http-proxy"),
        ("HTTPS_PROXY", "https-proxy"),
        ("NO_PROXY", "no-proxy"),
    ] {
        if let Some(v) = proxy(var) {
            proxies.insert(key.into(), json!(v));
        }
    }
    if !proxies.is_empty() {
        obj.insert("proxies".into(), serde_json::Value::Object(proxies));
    }

    let mut env: BTreeMap<String, String> = input
        .proxy_env
        .iter()
        .filter(|(k, _)| PROXY_VARS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if profile == Profile::Privileged {
        // moby's hack/dind sets it; dockerd and runc look at it.
        env.insert("container".into(), "docker".into());
    }

    Some(Plan {
        profile,
        pre_steps,
        data_root: PathBuf::from(&facts.data_root.path),
        storage_driver,
        iptables,
        mtu,
        daemon_json: daemon,
        args: vec!["--config-file".into(), CONFIG_FILE.into()],
        env,
        containerd,
        raise_nofile: profile == Profile::Privileged,
        notes,
    })
}
