//! The settings table: every setting sysrunner reads, declared once. `--help`, the README's
//! settings table, the list of variables kept from the runner's environment and the typed values
//! of step one (`Values`) all come from here. Declares only; parsing and rules are elsewhere.

/// Where a setting belongs; also the heading it is listed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    Scope,
    Credentials,
    GitHub,
    Runner,
    Docker,
    Time,
    Logs,
    Scale,
}

impl Group {
    pub const fn heading(self) -> &'static str {
        match self {
            Group::Scope => "Scope (exactly one)",
            Group::Credentials => "Credentials",
            Group::GitHub => "GitHub",
            Group::Runner => "Runner",
            Group::Docker => "Docker",
            Group::Time => "Time",
            Group::Logs => "Logs",
            Group::Scale => "Scale (`sysrunner scale` only)",
        }
    }
}

/// How a setting may be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The environment variable, or the long flag of the same name (`RUNNER_LABELS`, `--runner-labels`).
    EnvOrFlag,
    /// The environment only: a secret. argv is readable by every process, so no value flag exists;
    /// the matching `*_FILE` setting is the way to keep it out of the environment as well.
    EnvOnly,
}

/// The form a setting's value takes, as `--help` and the README say it. Its parser, and the type a
/// value becomes, is the marker of the same name in `parse::kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `owner/repo`.
    Repo,
    /// An organization or enterprise slug.
    Slug,
    /// A secret string (token).
    Secret,
    /// A PEM-encoded RSA private key (secret).
    RsaKey,
    /// A just-in-time runner configuration (secret, base64 of JSON).
    JitConfig,
    /// A path to a file holding the secret named by the setting without `_FILE`.
    SecretFile,
    /// A GitHub App id: a number, or a client id starting with `Iv`.
    AppId,
    /// A positive integer id.
    Id,
    /// An absolute `http(s)://` URL.
    Url,
    /// Comma-separated absolute `http(s)://` URLs.
    UrlList,
    /// A runner name (or prefix): letters, digits, `.`, `_`, `-`.
    RunnerName,
    /// Comma-separated runner labels.
    Labels,
    /// A runner group's name.
    RunnerGroup,
    /// true/false, 1/0, yes/no.
    Bool,
    /// One of the listed words.
    Choice(&'static [&'static str]),
    /// An absolute path.
    AbsPath,
    /// Comma-separated absolute paths.
    AbsPathList,
    /// A path relative to the runner directory, or absolute.
    WorkPath,
    /// A Unix user name (not root).
    UserName,
    /// `detect`, or an MTU in bytes.
    Mtu,
    /// `500ms`, `90`, `90s`, `5m`, `1h`.
    Duration,
    /// A tracing filter: `info`, `debug`, `sysrunner=debug,dockerd=warn`.
    LogLevel,
    /// A whole number, 0 or more.
    Count,
    /// A size in bytes, with an optional `k`, `m` or `g` (binary).
    Bytes,
    /// A number of CPUs, fractions allowed (`1.5`).
    Cpus,
    /// `IP:PORT`, or a bare port for every IPv4 address.
    Listen,
    /// A Docker image reference.
    Image,
}

impl Kind {
    /// The expected form, as said in error messages and the README.
    pub fn form(self) -> String {
        match self {
            Kind::Repo => "owner/repo".into(),
            Kind::Slug => "a slug (letters, digits, -, _)".into(),
            Kind::Secret => "secret string".into(),
            Kind::RsaKey => "PEM RSA private key (secret)".into(),
            Kind::JitConfig => "base64 JIT config (secret)".into(),
            Kind::SecretFile => "path to a file".into(),
            Kind::AppId => "number, or client id `Iv…`".into(),
            Kind::Id => "positive integer".into(),
            Kind::Url => "http(s) URL".into(),
            Kind::UrlList => "comma-separated http(s) URLs".into(),
            Kind::RunnerName => "letters, digits, `.` `_` `-`".into(),
            Kind::Labels => "comma-separated labels".into(),
            Kind::RunnerGroup => "group name".into(),
            Kind::Bool => "true/false, 1/0, yes/no".into(),
            Kind::Choice(words) => words.join(" or "),
            Kind::AbsPath => "absolute path".into(),
            Kind::AbsPathList => "comma-separated absolute paths".into(),
            Kind::WorkPath => "path".into(),
            Kind::UserName => "user name".into(),
            Kind::Mtu => "`detect` or 68..65535".into(),
            Kind::Duration => "duration: `500ms`, `90`, `90s`, `5m`, `1h`".into(),
            Kind::LogLevel => "`error` … `trace`, or a tracing filter".into(),
            Kind::Count => "whole number".into(),
            Kind::Bytes => "bytes: `512m`, `4g`".into(),
            Kind::Cpus => "CPUs: `2`, `1.5`".into(),
            Kind::Listen => "`IP:PORT`, or a port for every address".into(),
            Kind::Image => "image reference".into(),
        }
    }

    pub const fn is_secret(self) -> bool {
        matches!(self, Kind::Secret | Kind::RsaKey | Kind::JitConfig)
    }
}

/// A setting's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// Unset unless given.
    None,
    /// This literal, parsed exactly like a given value.
    Value(&'static str),
    /// Worked out at start-up; the text says how.
    Derived(&'static str),
}

/// One setting: the name is both the environment variable and, lowercased with dashes, the flag.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub name: &'static str,
    pub group: Group,
    pub kind: Kind,
    pub input: Input,
    pub default: DefaultValue,
    pub doc: &'static str,
}

impl Setting {
    /// The long flag (`--runner-labels`), or `None` for a secret read only from the environment.
    pub fn flag(&self) -> Option<String> {
        match self.input {
            Input::EnvOrFlag => Some(self.name.to_ascii_lowercase().replace('_', "-")),
            Input::EnvOnly => None,
        }
    }
}

const fn s(
    name: &'static str,
    group: Group,
    kind: Kind,
    default: DefaultValue,
    doc: &'static str,
) -> Setting {
    let input = if kind.is_secret() {
        Input::EnvOnly
    } else {
        Input::EnvOrFlag
    };
    Setting {
        name,
        group,
        kind,
        input,
        default,
        doc,
    }
}

/// Declares every setting once: a row gives the setting's field in `Values`, its name (the
/// variable, and the constant in `name`), its group, its kind's parser (a `parse::kind` marker,
/// which also fixes the field's type), its default and its doc. From the rows come `SETTINGS`
/// (for `--help`, the README and the runner's environment) and `Values` (step one's typed
/// result), so a setting the code reads is a field, and a misspelt one does not compile.
macro_rules! settings {
    ($( $field:ident $name:ident : $group:ident, $kind:ty, $default:expr, $doc:literal; )*) => {
        /// Every setting, in the order `--help` and the README list them.
        pub static SETTINGS: &[Setting] = &[
            $( s(stringify!($name), Group::$group, <$kind as Parse>::KIND, $default, $doc), )*
        ];

        /// Every setting's name, as a constant.
        pub mod name {
            $( pub const $name: &str = stringify!($name); )*
        }

        /// Step one's result: every setting, parsed by its kind, in a field of the kind's type.
        pub(super) struct Values {
            $( pub $field: Field<<$kind as Parse>::Value>, )*
        }

        impl Values {
            /// Parses every setting `collector` has in scope, in the table's order, then reads the
            /// `*_FILE` secrets.
            pub(super) fn collect(collector: &mut Collector) -> Values {
                let mut values = Values {
                    $( $field: collector.field::<$kind>(stringify!($name)), )*
                };
                collector.read_secret_files(&mut values);
                values
            }
        }
    };
}

use super::parse::{Parse, kind};
use super::values::{Collector, Field};
use super::{
    DataPolicy, DockerdMode, ImageStore, LifeSandbox, LogFormat, Mode, ScaleCacheMode, ScaleRuntime,
};
use DefaultValue::{Derived, None as Unset, Value};

settings! {
    repo REPO: Scope, kind::Repo, Unset,
        "Register with this repository.";
    org ORG: Scope, kind::Slug, Unset,
        "Register with this organization.";
    enterprise ENTERPRISE: Scope, kind::Slug, Unset,
        "Register with this enterprise (a PAT with `manage_runners:enterprise`; Apps cannot).";
    access_token ACCESS_TOKEN: Credentials, kind::Secret, Unset,
        "A personal access token: `repo` scope or Administration: write for REPO, `admin:org` or Self-hosted runners for ORG.";
    access_token_file ACCESS_TOKEN_FILE: Credentials, kind::SecretFile, Unset,
        "Read ACCESS_TOKEN from this file (compose `secrets:`).";
    app_id APP_ID: Credentials, kind::AppId, Unset,
        "GitHub App id, or its client id (`Iv…`); needs APP_PRIVATE_KEY.";
    app_private_key APP_PRIVATE_KEY: Credentials, kind::RsaKey, Unset,
        "The App's PEM private key (`\\n` escapes are accepted).";
    app_private_key_file APP_PRIVATE_KEY_FILE: Credentials, kind::SecretFile, Unset,
        "Read APP_PRIVATE_KEY from this file.";
    app_installation_id APP_INSTALLATION_ID: Credentials, kind::Id, Derived("looked up from the scope"),
        "The App installation to use.";
    actions_runner_input_jitconfig ACTIONS_RUNNER_INPUT_JITCONFIG: Credentials, kind::JitConfig, Unset,
        "A JIT config made by a controller (actions-runner-controller): no API call, no credentials; scope is optional.";
    github_url GITHUB_URL: GitHub, kind::Url, Value("https://github.com"),
        "GitHub, GHE.com (`https://SUB.ghe.com`) or GitHub Enterprise Server.";
    github_api_url GITHUB_API_URL: GitHub, kind::Url, Derived("from GITHUB_URL"),
        "REST API base: `https://api.github.com`, `https://api.SUB.ghe.com`, `https://HOST/api/v3`.";
    runner_name RUNNER_NAME: Runner, kind::RunnerName, Derived("`RUNNER_NAME_PREFIX-<hostname>`"),
        "The runner's name; unique per scope, at most 64 characters.";
    runner_name_prefix RUNNER_NAME_PREFIX: Runner, kind::RunnerName, Value("sysrunner"),
        "Prefix of the default name; `sysrunner prune` only touches runners named with it.";
    runner_labels RUNNER_LABELS: Runner, kind::Labels, Unset,
        "Extra labels, comma-separated.";
    runner_no_default_labels RUNNER_NO_DEFAULT_LABELS: Runner, kind::Bool, Value("false"),
        "Leave out `self-hosted`, `Linux` and the architecture label (needs RUNNER_LABELS).";
    runner_group RUNNER_GROUP: Runner, kind::RunnerGroup, Value("Default"),
        "Runner group (ORG and ENTERPRISE; a repository has only `Default`).";
    runner_workdir RUNNER_WORKDIR: Runner, kind::WorkPath, Value("_work"),
        "Job work directory, relative to the runner directory or absolute.";
    runner_dir RUNNER_DIR: Runner, kind::AbsPath, Value("/opt/actions-runner"),
        "The actions/runner release (read-only; each life runs it from its fresh root, or from a fresh overlay or copy of it without the sandbox).";
    runner_user RUNNER_USER: Runner, kind::UserName, Value("runner"),
        "The user jobs run as; never root.";
    runner_sudo RUNNER_SUDO: Runner, kind::Bool, Value("true"),
        "Let jobs use passwordless sudo.";
    life_sandbox LIFE_SANDBOX: Runner, kind::Choice<LifeSandbox>, Value("auto"),
        "`auto`: each life in a sandbox of its own (namespaces, cgroup, network, a fresh overlay root; see Security) where the container allows it, else the pristine reset with a warning; `required`: exit 78 where it cannot; `off`: the pristine reset only.";
    life_binds LIFE_BINDS: Runner, kind::AbsPathList, Unset,
        "Container paths bound read-write into every life at the same path (a cache volume); what a job writes there reaches the next life.";
    registration REGISTRATION: Runner, kind::Choice<Mode>, Value("jit"),
        "`jit`: one generate-jitconfig call; `config`: registration token and `config.sh --ephemeral`.";
    dockerd DOCKERD: Docker, kind::Choice<DockerdMode>, Value("on"),
        "`on`: each life has its own dockerd; `off`: none (jobs that need no Docker, or a runtime that cannot run dockerd, such as plain runc: the probe's `unsupported` is then a warning).";
    docker_registry_mirrors DOCKER_REGISTRY_MIRRORS: Docker, kind::UrlList, Unset,
        "Registry mirrors for the inner dockerd (a company mirror); set, the cache is not asked.";
    docker_registry_cache DOCKER_REGISTRY_CACHE: Docker, kind::Url, Unset,
        "A pull-through cache of Docker Hub (the compose files' `cache` service, `http://cache:5000`): each life asks its `/v2/` beside dockerd's start and, when it answers, makes it the inner dockerd's registry mirror; otherwise the life pulls directly. Unset or empty: no cache.";
    docker_registry_cache_timeout DOCKER_REGISTRY_CACHE_TIMEOUT: Docker, kind::Duration, Value("2s"),
        "How long the cache may take to answer `/v2/` before a life pulls directly (at most 60s). A cache that hangs delays a life by at most this, less dockerd's start; one that answers late, by up to 2 s more while dockerd reloads.";
    docker_mtu DOCKER_MTU: Docker, kind::Mtu, Value("detect"),
        "MTU of the inner dockerd's networks; `detect` reads the default route's interface.";
    docker_data DOCKER_DATA: Docker, kind::Choice<DataPolicy>, Value("ephemeral"),
        "`ephemeral` empties the inner docker data root at every start; `keep` keeps images between jobs.";
    docker_image_store DOCKER_IMAGE_STORE: Docker, kind::Choice<ImageStore>, Value("graphdriver"),
        "`graphdriver`: the classic store (overlay2, or what the runtime allows); `containerd`: the containerd image store (multi-platform images), Docker 29's default on a fresh data root.";
    dockerd_ready_timeout DOCKERD_READY_TIMEOUT: Time, kind::Duration, Value("60s"),
        "How long dockerd may take to answer `/_ping`.";
    drain_timeout DRAIN_TIMEOUT: Time, kind::Duration, Value("0s"),
        "After SIGTERM, how long a running job may go on before it is cancelled.";
    stop_timeout STOP_TIMEOUT: Time, kind::Duration, Value("9s"),
        "After the drain, the budget to deregister and stop (under compose's default 10 s grace).";
    api_timeout API_TIMEOUT: Time, kind::Duration, Value("10s"),
        "Timeout of one GitHub API request.";
    api_deadline API_DEADLINE: Time, kind::Duration, Value("5m"),
        "Deadline of one GitHub operation with its retries.";
    log_format LOG_FORMAT: Logs, kind::Choice<LogFormat>, Value("text"),
        "`text` for people, `json` for one object per line.";
    log_level LOG_LEVEL: Logs, kind::LogLevel, Value("info"),
        "Log level or tracing filter.";
    scale_set_name SCALE_SET_NAME: Scale, kind::RunnerName, Derived("`RUNNER_NAME_PREFIX-<hostname>`"),
        "The scale set this controller owns; one per host. Its runners are named `SCALE_SET_NAME-<8 hex>`; without RUNNER_LABELS, `runs-on:` names the scale set.";
    scale_image SCALE_IMAGE: Scale, kind::Image, Value("ghcr.io/sysrunner/sysrunner:0.1.0"),
        "The runner image each job's container is made from (pulled beforehand; the controller never pulls).";
    scale_runtime SCALE_RUNTIME: Scale, kind::Choice<ScaleRuntime>, Value("auto"),
        "`auto`: `sysbox-runc` where the host's Docker lists it, else `privileged` if SCALE_ALLOW_PRIVILEGED, else exit 78; `sysbox`; `privileged`; `runc`: plain containers with DOCKERD=off (jobs without Docker).";
    scale_allow_privileged SCALE_ALLOW_PRIVILEGED: Scale, kind::Bool, Value("false"),
        "Allow `--privileged` runner containers (a job is then root on the host): the fallback when sysbox is not installed.";
    scale_min_runners SCALE_MIN_RUNNERS: Scale, kind::Count, Value("0"),
        "Idle runners kept waiting for jobs (the warm pool); 0 scales to zero.";
    scale_max_runners SCALE_MAX_RUNNERS: Scale, kind::Count, Value("4"),
        "At most this many runner containers at once on this host.";
    scale_cpus SCALE_CPUS: Scale, kind::Cpus, Unset,
        "CPU limit of each runner container (`docker run --cpus`).";
    scale_memory SCALE_MEMORY: Scale, kind::Bytes, Unset,
        "Memory limit of each runner container (`docker run --memory`).";
    scale_pids SCALE_PIDS: Scale, kind::Count, Unset,
        "Process limit of each runner container (`docker run --pids-limit`).";
    scale_network SCALE_NETWORK: Scale, kind::RunnerName, Value("bridge"),
        "The Docker network runner containers join.";
    scale_docker_socket SCALE_DOCKER_SOCKET: Scale, kind::AbsPath, Value("/var/run/docker.sock"),
        "The host's Docker Engine socket.";
    scale_state_dir SCALE_STATE_DIR: Scale, kind::AbsPath, Value("/var/lib/sysrunner-scale"),
        "Where the controller keeps its message session's id (a volume, so a recreated controller meets no 409).";
    scale_listen SCALE_LISTEN: Scale, kind::Listen, Unset,
        "Serve `/metrics` (Prometheus) and `/healthz` here; off unless set.";
    scale_cache SCALE_CACHE: Scale, kind::Choice<ScaleCacheMode>, Value("auto"),
        "`auto`: find the pull-through cache container SCALE_CACHE_NAME (compose.scale.yml's `cache` service), start it if stopped, or make it from SCALE_CACHE_IMAGE when there is none, and point every runner at it (DOCKER_REGISTRY_CACHE); runners pull directly while it is missing. `off`: no cache.";
    scale_cache_name SCALE_CACHE_NAME: Scale, kind::RunnerName, Value("sysrunner-cache"),
        "The cache container's name, and the name of the volume one the controller makes keeps its layers in.";
    scale_cache_image SCALE_CACHE_IMAGE: Scale, kind::Image, Value("registry:2"),
        "The registry image a cache the controller makes runs (pulled beforehand; the controller never pulls).";
}

/// Variables of other runner images, and what to set instead. Set, each gets one warning; they are
/// also kept from the runner's environment (RUNNER_TOKEN is a secret).
pub static FOREIGN: &[(&str, &str)] = &[
    (
        "EPHEMERAL",
        "nothing: sysrunner runners are always ephemeral",
    ),
    (
        "RUNNER_TOKEN",
        "ACCESS_TOKEN or APP_ID + APP_PRIVATE_KEY: sysrunner fetches registration tokens itself",
    ),
    ("LABELS", "RUNNER_LABELS"),
    ("RUNNER_SCOPE", "exactly one of REPO, ORG, ENTERPRISE"),
    ("ORG_NAME", "ORG"),
    (
        "REPO_URL",
        "REPO=owner/repo (and GITHUB_URL for GitHub Enterprise Server)",
    ),
];

/// Looks a setting up by name. Panics on a name not in the table: that is a bug, not input.
pub fn setting(name: &str) -> &'static Setting {
    SETTINGS
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} is not in the settings table"))
}

/// The README's settings table.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| variable | flag | default | form | what it does |\n|---|---|---|---|---|\n",
    );
    for s in SETTINGS {
        let flag = match s.flag() {
            Some(f) => format!("`--{f}`"),
            None => "(environment only)".to_string(),
        };
        let default = match s.default {
            DefaultValue::None => String::new(),
            DefaultValue::Value(v) => format!("`{v}`"),
            DefaultValue::Derived(how) => how.to_string(),
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            s.name,
            flag,
            default,
            s.kind.form().replace('|', "\\|"),
            s.doc
        ));
    }
    out
}
