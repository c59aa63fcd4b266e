//! What one runner container is: its runtime (chosen from what the host's Docker lists and the
//! settings allow), its environment (the JIT config, the pull-through cache's URL and nothing
//! else of the controller's), its labels (how a later run finds it), its limits and mounts; and
//! what the pull-through cache container is and what to do about the one the engine shows. Pure:
//! [`super::docker`] turns a [`RunnerSpec`] or [`CacheSpec`] into Engine API calls; nothing here
//! talks to Docker.

use crate::config::{ContainerLimits, ScaleCache, ScaleRuntime, ScaleSettings};
use crate::secret::Secret;
use std::collections::BTreeMap;

/// The scale set a container belongs to (its name).
pub const LABEL_SET: &str = "sysrunner.scale-set";
/// The runner's name at GitHub.
pub const LABEL_RUNNER: &str = "sysrunner.runner-name";
/// The runner's id at GitHub.
pub const LABEL_RUNNER_ID: &str = "sysrunner.runner-id";
/// The image label that names the image's actions/runner version (set by the Dockerfiles).
pub const LABEL_RUNNER_VERSION: &str = "io.github.sysrunner.runner-version";

/// The OCI runtime name sysbox registers with Docker.
pub const SYSBOX_RUNC: &str = "sysbox-runc";

/// How runner containers run on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `runtime: sysbox-runc`: the runner's dockerd in a user namespace, no privilege on the host.
    Sysbox,
    /// `privileged: true`: a job is root on the host.
    Privileged,
    /// The host's default runtime with `DOCKERD=off`: jobs without Docker.
    Runc,
}

impl Runtime {
    pub fn word(self) -> &'static str {
        match self {
            Runtime::Sysbox => "sysbox",
            Runtime::Privileged => "privileged",
            Runtime::Runc => "runc",
        }
    }
}

/// Chooses the runtime from SCALE_RUNTIME and the runtimes the host's Docker lists (`docker
/// info`'s `Runtimes`), or says why none will do and what to do about it.
pub fn choose_runtime(
    setting: ScaleRuntime,
    listed: &[String],
    allow_privileged: bool,
) -> Result<Runtime, String> {
    let has_sysbox = listed.iter().any(|r| r == SYSBOX_RUNC);
    match setting {
        ScaleRuntime::Sysbox if has_sysbox => Ok(Runtime::Sysbox),
        ScaleRuntime::Sysbox => Err(format!(
            "SCALE_RUNTIME=sysbox, but the host's Docker lists no {SYSBOX_RUNC} runtime (it lists: {}); remedy: install sysbox on the host (it registers the runtime with dockerd), or set SCALE_RUNTIME=runc for jobs without Docker",
            listed.join(", ")
        )),
        ScaleRuntime::Privileged if allow_privileged => Ok(Runtime::Privileged),
        ScaleRuntime::Privileged => Err(
            "SCALE_RUNTIME=privileged without SCALE_ALLOW_PRIVILEGED=true; remedy: install sysbox, or accept that jobs are root on the host with SCALE_ALLOW_PRIVILEGED=true".into(),
        ),
        ScaleRuntime::Runc => Ok(Runtime::Runc),
        ScaleRuntime::Auto if has_sysbox => Ok(Runtime::Sysbox),
        ScaleRuntime::Auto if allow_privileged => Ok(Runtime::Privileged),
        ScaleRuntime::Auto => Err(format!(
            "the host's Docker lists no {SYSBOX_RUNC} runtime (it lists: {}), and privileged runner containers are not allowed; remedy: install sysbox on the host (https://github.com/nestybox/sysbox), or set SCALE_ALLOW_PRIVILEGED=true (a job is then root on the host), or SCALE_RUNTIME=runc for jobs that need no Docker",
            listed.join(", ")
        )),
    }
}

/// One runner container, as the Engine API will be asked for it.
#[derive(Debug, Clone)]
pub struct RunnerSpec {
    /// The container's name: the runner's.
    pub name: String,
    pub image: String,
    /// The runner's JIT config, its `ACTIONS_RUNNER_INPUT_JITCONFIG` (redacted in `Debug`).
    pub jit: Secret,
    /// `NAME=value`: the rest of its environment, no secret in it.
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// `Some("sysbox-runc")`, or the host's default.
    pub runtime: Option<String>,
    pub privileged: bool,
    pub limits: ContainerLimits,
    pub network: String,
    /// Path → options, as compose's `tmpfs:` gives them to the runner image.
    pub tmpfs: BTreeMap<String, String>,
}

/// actions/runner's switch that makes a refused runner version exit 7.
pub const DEPRECATED_EXIT: &str = "ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1";

/// The variable a runner's `sysrunner run` reads the pull-through cache's URL from.
pub const CACHE_VAR: &str = "DOCKER_REGISTRY_CACHE";

/// The runner's container: the JIT config is the only secret it gets, and the only setting
/// besides the exit-7 switch (and `DOCKERD=off` on plain runc) and, when a cache is known,
/// [`CACHE_VAR`] (a URL made by [`cache_url`]: no credentials in it; the cache's own Docker Hub
/// login, if any, stays in the cache container). No restart policy: the controller removes it
/// when it exits. `/tmp` is exec and `/run` a tmpfs, as in the compose files.
pub fn runner_spec(
    s: &ScaleSettings,
    runtime: Runtime,
    runner_name: &str,
    runner_id: u64,
    jit: Secret,
    cache: Option<&str>,
) -> RunnerSpec {
    let mut env = vec![DEPRECATED_EXIT.to_string()];
    if runtime == Runtime::Runc {
        env.push("DOCKERD=off".into());
    }
    if let Some(url) = cache {
        env.push(format!("{CACHE_VAR}={url}"));
    }
    let labels = BTreeMap::from([
        (LABEL_SET.to_string(), s.name.clone()),
        (LABEL_RUNNER.to_string(), runner_name.to_string()),
        (LABEL_RUNNER_ID.to_string(), runner_id.to_string()),
    ]);
    let tmpfs = BTreeMap::from([
        ("/tmp".to_string(), "exec,mode=1777,size=2g".to_string()),
        ("/run".to_string(), "mode=755,size=256m".to_string()),
    ]);
    RunnerSpec {
        name: runner_name.to_string(),
        image: s.image.clone(),
        jit,
        env,
        labels,
        runtime: (runtime == Runtime::Sysbox).then(|| SYSBOX_RUNC.to_string()),
        privileged: runtime == Runtime::Privileged,
        limits: s.limits,
        network: s.network.clone(),
        tmpfs,
    }
}

/// The variable the runner image reads its JIT config from.
pub const JIT_VAR: &str = "ACTIONS_RUNNER_INPUT_JITCONFIG";

impl RunnerSpec {
    /// The container's whole environment, the JIT config first: for the Engine API call only.
    pub fn environment(&self) -> Vec<String> {
        std::iter::once(format!("{JIT_VAR}={}", self.jit.expose()))
            .chain(self.env.iter().cloned())
            .collect()
    }
}

/// A runner's name: the scale set's, a dash and 8 random hex digits.
pub fn runner_name(set: &str, random: u32) -> String {
    format!("{set}-{random:08x}")
}

/// Whether `name` is one of the scale set `set`'s runner names: exactly `set-<8 hex>`.
pub fn is_runner_name(set: &str, name: &str) -> bool {
    name.strip_prefix(set)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hex| {
            hex.len() == 8
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// The label on a cache container the controller makes: the scale set that made it. Deliberately
/// not [`LABEL_SET`]: what carries that is a runner, adopted or removed by its scale set's
/// controller, and the cache is neither.
pub const LABEL_CACHE: &str = "sysrunner.cache";
/// The port the distribution registry listens on (its image's default).
pub const CACHE_PORT: u16 = 5000;
/// Where the distribution registry keeps its layers (its image's default).
pub const CACHE_DATA: &str = "/var/lib/registry";
/// The registry a cache the controller makes mirrors: Docker Hub, the only registry dockerd's
/// `registry-mirrors` apply to.
pub const CACHE_REMOTE: &str = "https://registry-1.docker.io";

/// The pull-through cache container the controller makes when SCALE_CACHE_NAME does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpec {
    /// SCALE_CACHE_NAME: the container's name and its volume's.
    pub name: String,
    pub image: String,
    /// `NAME=value`: the registry's proxy mode, and no credentials (an operator who wants a
    /// Docker Hub login for the cache runs compose.scale.yml's `cache` service instead).
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// The named volume mounted at [`CACHE_DATA`]: made if missing, never removed.
    pub volume: String,
    /// SCALE_NETWORK, as the runners'.
    pub network: String,
}

/// The cache container: `registry:2`'s defaults (port 5000, layers under [`CACHE_DATA`]) in proxy
/// mode for Docker Hub, restart policy `always` (set in [`super::docker`]) so that it outlives the
/// controller, on the runners' network.
pub fn cache_spec(s: &ScaleSettings, cache: &ScaleCache) -> CacheSpec {
    CacheSpec {
        name: cache.name.clone(),
        image: cache.image.clone(),
        env: vec![
            format!("REGISTRY_PROXY_REMOTEURL={CACHE_REMOTE}"),
            // Expiry deletes what it drops: without this the cache only grows.
            "REGISTRY_STORAGE_DELETE_ENABLED=true".to_string(),
        ],
        labels: BTreeMap::from([(LABEL_CACHE.to_string(), s.name.clone())]),
        volume: cache.name.clone(),
        network: s.network.clone(),
    }
}

/// The cache's URL for [`CACHE_VAR`], from its address on SCALE_NETWORK.
pub fn cache_url(address: std::net::IpAddr) -> String {
    match address {
        std::net::IpAddr::V4(a) => format!("http://{a}:{CACHE_PORT}"),
        std::net::IpAddr::V6(a) => format!("http://[{a}]:{CACHE_PORT}"),
    }
}

/// What the engine says of the container named SCALE_CACHE_NAME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSeen {
    pub id: String,
    /// Docker's word for its state: `created`, `running`, `exited`, `restarting`, ...
    pub status: String,
    /// Its address on SCALE_NETWORK; `None` when not attached there.
    pub attached: Option<Option<std::net::IpAddr>>,
}

/// The next thing to do about the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheStep {
    /// It runs on SCALE_NETWORK: runners get this URL.
    Use(String),
    /// No container of that name: make one (if its image is here).
    Create,
    /// Created or exited: start it.
    Start,
    /// Running, but not on SCALE_NETWORK (compose put it on its own network): connect it.
    Connect,
    /// Nothing to do that would help now; runners pull directly, for this reason.
    Unusable(String),
}

/// From what the engine shows to the next step: a container is used as found, only started
/// or connected, never recreated (it may be compose's, with its own settings and credentials).
pub fn cache_step(seen: Option<&CacheSeen>) -> CacheStep {
    let Some(c) = seen else {
        return CacheStep::Create;
    };
    match c.status.as_str() {
        "created" | "exited" => CacheStep::Start,
        "running" => match c.attached {
            None => CacheStep::Connect,
            Some(Some(ip)) => CacheStep::Use(cache_url(ip)),
            Some(None) => CacheStep::Unusable("it has no IP address on SCALE_NETWORK".into()),
        },
        other => CacheStep::Unusable(format!("it is {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn auto_prefers_sysbox_then_privileged_if_allowed_else_refuses_with_the_remedy() {
        let with = listed(&["io.containerd.runc.v2", "runc", SYSBOX_RUNC]);
        let without = listed(&["io.containerd.runc.v2", "runc"]);
        use ScaleRuntime::*;
        assert_eq!(choose_runtime(Auto, &with, false), Ok(Runtime::Sysbox));
        assert_eq!(choose_runtime(Auto, &with, true), Ok(Runtime::Sysbox));
        assert_eq!(
            choose_runtime(Auto, &without, true),
            Ok(Runtime::Privileged)
        );
        let e = choose_runtime(Auto, &without, false).unwrap_err();
        assert!(
            e.contains("remedy") && e.contains("SCALE_ALLOW_PRIVILEGED=true"),
            "{e}"
        );
        assert!(
            e.contains("runc, io.containerd.runc.v2") || e.contains("io.containerd.runc.v2, runc"),
            "{e}"
        );
        assert!(choose_runtime(Sysbox, &without, true).is_err());
        assert_eq!(choose_runtime(Sysbox, &with, false), Ok(Runtime::Sysbox));
        assert!(choose_runtime(Privileged, &with, false).is_err());
        assert_eq!(
            choose_runtime(Privileged, &with, true),
            Ok(Runtime::Privileged)
        );
        assert_eq!(choose_runtime(Runc, &without, false), Ok(Runtime::Runc));
    }

    fn settings() -> ScaleSettings {
        use crate::config::*;
        ScaleSettings {
            scope: Scope::Org("octo".into()),
            auth: Auth::Token(crate::secret::Secret::new("ghp_x")),
            github: GitHubUrls {
                web: "https://github.com".into(),
                api: "https://api.github.com".into(),
            },
            name: "ci-host1".into(),
            labels: vec!["ci".into()],
            group: "Default".into(),
            image: "ghcr.io/sysrunner/sysrunner:0.1.0".into(),
            runtime: ScaleRuntime::Auto,
            allow_privileged: false,
            min_runners: 0,
            max_runners: 4,
            limits: ContainerLimits {
                nano_cpus: Some(1_500_000_000),
                memory: Some(4 << 30),
                pids: Some(4096),
            },
            network: "bridge".into(),
            docker_socket: "/var/run/docker.sock".into(),
            state_dir: "/var/lib/sysrunner-scale".into(),
            listen: None,
            cache: None,
            timeouts: Timeouts {
                drain: std::time::Duration::ZERO,
                stop: std::time::Duration::from_secs(9),
                api: std::time::Duration::from_secs(10),
                api_deadline: std::time::Duration::from_secs(300),
            },
            log: LogSettings {
                format: LogFormat::Text,
                level: "info".into(),
            },
            warnings: vec![],
        }
    }

    #[test]
    fn a_sysbox_runner_gets_the_jit_config_the_exit_7_switch_and_nothing_else() {
        let s = settings();
        let spec = runner_spec(
            &s,
            Runtime::Sysbox,
            "ci-host1-0000002a",
            42,
            Secret::new("eyJqaXQ"),
            None,
        );
        assert_eq!(
            spec.environment(),
            vec![
                "ACTIONS_RUNNER_INPUT_JITCONFIG=eyJqaXQ".to_string(),
                DEPRECATED_EXIT.to_string()
            ]
        );
        assert!(!format!("{spec:?}").contains("eyJqaXQ"), "{spec:?}");
        assert_eq!(spec.runtime.as_deref(), Some(SYSBOX_RUNC));
        assert!(!spec.privileged);
        assert_eq!(spec.labels[LABEL_SET], "ci-host1");
        assert_eq!(spec.labels[LABEL_RUNNER], "ci-host1-0000002a");
        assert_eq!(spec.labels[LABEL_RUNNER_ID], "42");
        assert_eq!(spec.limits, s.limits);
        assert_eq!(spec.tmpfs["/tmp"], "exec,mode=1777,size=2g");
        assert!(
            !spec.environment().iter().any(|e| e.contains("ghp_")),
            "the controller's token never reaches a runner"
        );
    }

    #[test]
    fn privileged_and_runc_runners_differ_only_in_how_they_run() {
        let s = settings();
        let p = runner_spec(&s, Runtime::Privileged, "n", 1, Secret::new("j"), None);
        assert!(p.privileged && p.runtime.is_none());
        assert!(!p.env.iter().any(|e| e.starts_with("DOCKERD=")));
        let r = runner_spec(&s, Runtime::Runc, "n", 1, Secret::new("j"), None);
        assert!(!r.privileged && r.runtime.is_none());
        assert!(r.env.contains(&"DOCKERD=off".to_string()));
    }

    #[test]
    fn runner_names_are_the_set_and_8_hex_digits() {
        assert_eq!(runner_name("ci-host1", 0x2a), "ci-host1-0000002a");
        assert_eq!(runner_name("x", u32::MAX), "x-ffffffff");
        assert!(is_runner_name("ci", &runner_name("ci", 7)));
        // Another scale set whose name starts with this one's, or a runner made by hand.
        assert!(!is_runner_name("ci", &runner_name("ci-gpu", 7)));
        assert!(!is_runner_name("ci", "ci-deadbeef0"));
        assert!(!is_runner_name("ci", "ci-DEADBEEF"));
        assert!(!is_runner_name("ci", "ci-build"));
    }

    #[test]
    fn a_runner_gets_the_cache_url_when_one_is_known_and_nothing_of_it_otherwise() {
        let s = settings();
        let url = cache_url("172.17.0.2".parse().unwrap());
        assert_eq!(url, "http://172.17.0.2:5000");
        let with = runner_spec(&s, Runtime::Sysbox, "n", 1, Secret::new("j"), Some(&url));
        assert_eq!(
            with.environment(),
            vec![
                "ACTIONS_RUNNER_INPUT_JITCONFIG=j".to_string(),
                DEPRECATED_EXIT.to_string(),
                "DOCKER_REGISTRY_CACHE=http://172.17.0.2:5000".to_string(),
            ]
        );
        // SCALE_CACHE=off, or no cache to be had: no trace of one.
        let without = runner_spec(&s, Runtime::Sysbox, "n", 1, Secret::new("j"), None);
        assert!(
            !without
                .environment()
                .iter()
                .any(|e| e.starts_with(CACHE_VAR)),
            "{without:?}"
        );
        assert_eq!(
            cache_url("fd00::2".parse().unwrap()),
            "http://[fd00::2]:5000"
        );
    }

    #[test]
    fn the_cache_made_is_a_docker_hub_proxy_with_a_volume_of_its_name_and_no_runner_label() {
        let s = settings();
        let c = cache_spec(
            &s,
            &ScaleCache {
                name: "sysrunner-cache".into(),
                image: "registry:2".into(),
            },
        );
        assert_eq!(c.name, "sysrunner-cache");
        assert_eq!(c.volume, "sysrunner-cache");
        assert_eq!(c.image, "registry:2");
        assert_eq!(c.network, "bridge");
        // Exactly these: the controller's token (settings' `ghp_x`) never reaches the cache.
        assert_eq!(
            c.env,
            [
                "REGISTRY_PROXY_REMOTEURL=https://registry-1.docker.io",
                "REGISTRY_STORAGE_DELETE_ENABLED=true"
            ]
        );
        // A runner label would make it a runner for `adopt` to take or remove.
        assert_eq!(
            c.labels,
            BTreeMap::from([(LABEL_CACHE.to_string(), "ci-host1".to_string())])
        );
        assert!(!c.labels.contains_key(LABEL_SET));
        assert!(!c.labels.contains_key(LABEL_RUNNER));
    }

    #[test]
    fn a_cache_container_is_started_connected_or_used_as_found_and_made_only_when_missing() {
        let seen = |status: &str, attached: Option<Option<&str>>| CacheSeen {
            id: "c0ffee".into(),
            status: status.into(),
            attached: attached.map(|a| a.map(|ip| ip.parse().unwrap())),
        };
        assert_eq!(cache_step(None), CacheStep::Create);
        assert_eq!(
            cache_step(Some(&seen("exited", Some(Some("172.17.0.2"))))),
            CacheStep::Start
        );
        assert_eq!(cache_step(Some(&seen("created", None))), CacheStep::Start);
        assert_eq!(
            cache_step(Some(&seen("running", None))),
            CacheStep::Connect,
            "compose's cache on its own network"
        );
        assert_eq!(
            cache_step(Some(&seen("running", Some(Some("10.5.0.3"))))),
            CacheStep::Use("http://10.5.0.3:5000".into())
        );
        assert!(matches!(
            cache_step(Some(&seen("running", Some(None)))),
            CacheStep::Unusable(_)
        ));
        for status in ["restarting", "paused", "dead", "removing"] {
            assert_eq!(
                cache_step(Some(&seen(status, Some(Some("172.17.0.2"))))),
                CacheStep::Unusable(format!("it is {status}")),
            );
        }
    }
}
