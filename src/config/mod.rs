//! Settings: collects each setting's text (flag, else environment, else its `*_FILE`), validates
//! every value, resolves the rules that span several, and returns typed settings, or every problem
//! at once. Owns the meaning of every variable. Touches no network, writes no file, starts no
//! process: the only I/O is reading `*_FILE` secrets, through the reader it is given.
//!
//! In two steps, after STYLE's "settings in two steps": [`defs`] declares every setting once
//! (name, group, kind, default, doc); from that one table come `--help`, the README's table and
//! `defs::Values`, one typed field per setting. Step one (`values`, with a parser per kind in
//! `parse`) fills those fields, each on its own; step two (`resolve`) applies the rules that span
//! several and builds the settings below. Nothing reads a setting by its name as a string.

/// Declares a choice setting's enum with its words, once: the words are what the setting accepts
/// (any case) and what `--help` lists, in this order.
macro_rules! choice {
    ($(#[$meta:meta])* pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $word:literal, )+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl parse::Choice for $name {
            const WORDS: &'static [&'static str] = &[$($word),+];
            const VALUES: &'static [Self] = &[$($name::$variant),+];
        }
    };
}

pub mod defs;
mod parse;
mod resolve;
mod values;

pub use defs::{FOREIGN, Group, Kind, SETTINGS, Setting};
pub use parse::{Bad, Choice, MAX_LABELS, MAX_RUNNER_NAME};

/// The one duration syntax (`90`, `90s`, `5m`, `1h`), for flags that are not settings.
pub fn parse_duration(raw: &str) -> Result<Duration, Bad> {
    parse::duration(raw)
}

use crate::secret::Secret;
use defs::Values;
use resolve::Resolver;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use values::Collector;

/// What settings are read from. Production passes the process's flags, environment, file reader
/// and host name; tests pass maps.
pub struct Inputs<'a> {
    /// Setting name -> the value given as a flag.
    pub flags: &'a BTreeMap<String, String>,
    pub env: &'a dyn Fn(&str) -> Option<OsString>,
    pub read_file: &'a dyn Fn(&Path) -> io::Result<String>,
    pub hostname: Option<String>,
}

/// One thing wrong with the settings: the variable, the value (never a secret's), what is wrong
/// and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub var: String,
    /// The offending value as given, or `None` for a secret or a missing value.
    pub value: Option<String>,
    pub what: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={:?} {}; {}", self.var, v, self.what, self.fix),
            None => write!(f, "{} {}; {}", self.var, self.what, self.fix),
        }
    }
}

/// Every problem found, reported together so one restart fixes them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            writeln!(f, "error: {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Where a runner registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Repo { owner: String, repo: String },
    Org(String),
    Enterprise(String),
}

impl Scope {
    /// The REST path prefix: `/repos/o/r`, `/orgs/o`, `/enterprises/e`.
    pub fn api_path(&self) -> String {
        match self {
            Scope::Repo { owner, repo } => format!("/repos/{owner}/{repo}"),
            Scope::Org(o) => format!("/orgs/{o}"),
            Scope::Enterprise(e) => format!("/enterprises/{e}"),
        }
    }

    /// The scope's page under the web URL, as `config.sh --url` wants it.
    pub fn web_path(&self) -> String {
        match self {
            Scope::Repo { owner, repo } => format!("/{owner}/{repo}"),
            Scope::Org(o) => format!("/{o}"),
            Scope::Enterprise(e) => format!("/enterprises/{e}"),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Repo { owner, repo } => write!(f, "repository {owner}/{repo}"),
            Scope::Org(o) => write!(f, "organization {o}"),
            Scope::Enterprise(e) => write!(f, "enterprise {e}"),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Auth {
    Token(Secret),
    App {
        id: String,
        key: Secret,
        installation: Option<u64>,
    },
}

choice! {
    /// REGISTRATION: how sysrunner registers through the API.
    pub enum Mode {
        /// One `generate-jitconfig` call.
        Jit = "jit",
        /// A registration token and `config.sh --ephemeral`.
        Config = "config",
    }
}

#[derive(Debug, Clone)]
pub enum Registration {
    /// sysrunner registers through the REST API with its own credentials.
    Api {
        scope: Scope,
        auth: Auth,
        mode: Mode,
    },
    /// A controller already registered the runner: no API call, and it owns deregistration.
    PreMade {
        jit_config: Secret,
        scope: Option<Scope>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHubUrls {
    /// `https://github.com`, `https://SUB.ghe.com` or the GHES host, without a trailing slash.
    pub web: String,
    /// The REST API base, without a trailing slash.
    pub api: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerSettings {
    pub name: String,
    pub name_prefix: String,
    pub labels: Vec<String>,
    pub no_default_labels: bool,
    pub group: String,
    pub workdir: String,
    pub dir: PathBuf,
    pub user: String,
    pub sudo: bool,
    /// LIFE_SANDBOX.
    pub sandbox: LifeSandbox,
    /// LIFE_BINDS.
    pub life_binds: Vec<PathBuf>,
}

choice! {
    /// LIFE_SANDBOX: whether each life runs in a sandbox of its own (`crate::sandbox`).
    pub enum LifeSandbox {
        Auto = "auto",
        Required = "required",
        Off = "off",
    }
}

choice! {
    /// DOCKER_DATA: whether the inner dockerd's data root is emptied at every start.
    pub enum DataPolicy {
        Ephemeral = "ephemeral",
        Keep = "keep",
    }
}

choice! {
    /// DOCKER_IMAGE_STORE: where the inner dockerd keeps images. Always said explicitly in its
    /// `daemon.json`, because Docker >= 29 switches a fresh data root (every life's, with
    /// DOCKER_DATA=ephemeral) to the containerd image store unless told otherwise.
    pub enum ImageStore {
        GraphDriver = "graphdriver",
        Containerd = "containerd",
    }
}

choice! {
    /// DOCKERD: whether a life has an inner dockerd at all.
    pub enum DockerdMode {
        On = "on",
        Off = "off",
    }
}

choice! {
    /// SCALE_CACHE: whether `sysrunner scale` points its runners at a pull-through cache.
    pub enum ScaleCacheMode {
        Auto = "auto",
        Off = "off",
    }
}

/// The pull-through cache container `sysrunner scale` finds or makes (SCALE_CACHE=auto).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleCache {
    /// SCALE_CACHE_NAME: the container's name, and the volume's of one the controller makes.
    pub name: String,
    /// SCALE_CACHE_IMAGE: what a cache the controller makes runs.
    pub image: String,
}

choice! {
    /// SCALE_RUNTIME: what runner containers `sysrunner scale` starts run on.
    pub enum ScaleRuntime {
        Auto = "auto",
        Sysbox = "sysbox",
        Privileged = "privileged",
        Runc = "runc",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerSettings {
    /// `off`: no inner dockerd (jobs that need no Docker; runtimes that cannot run one).
    pub dockerd: DockerdMode,
    pub registry_mirrors: Vec<String>,
    /// DOCKER_REGISTRY_CACHE: a pull-through cache, made the mirror when it answers in time.
    pub registry_cache: Option<String>,
    pub registry_cache_timeout: Duration,
    pub image_store: ImageStore,
    /// `None`: detect from the default route's interface.
    pub mtu: Option<u32>,
    pub data: DataPolicy,
    pub ready_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub drain: Duration,
    pub stop: Duration,
    pub api: Duration,
    pub api_deadline: Duration,
}

choice! {
    /// LOG_FORMAT.
    pub enum LogFormat {
        Text = "text",
        Json = "json",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// Everything `sysrunner run` needs.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub registration: Registration,
    pub github: GitHubUrls,
    pub runner: RunnerSettings,
    pub docker: DockerSettings,
    pub timeouts: Timeouts,
    pub log: LogSettings,
    /// Said once logging is up: variables of other runner images, settings a JIT config overrides.
    pub warnings: Vec<String>,
    /// Files secrets were read from (`*_FILE`): masked once read, so a job cannot read them.
    pub secret_files: Vec<PathBuf>,
    /// `ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1` (exactly `1`, as actions/runner's
    /// `run-helper.sh` tests it): a listener's exit 7 becomes the container's. Not a setting of
    /// ours but actions/runner's own variable, which actions-runner-controller sets: it stays in
    /// the runner's environment, where the listener reads it.
    pub pass_deprecated_exit: bool,
}

/// What `sysrunner prune` needs: the scope and credentials, GitHub, the name prefix, timeouts.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub scope: Scope,
    pub auth: Auth,
    pub github: GitHubUrls,
    pub name_prefix: String,
    pub timeouts: Timeouts,
    pub log: LogSettings,
}

/// The groups `prune` reads (of the runner group, only RUNNER_NAME_PREFIX matters).
pub const API_GROUPS: &[Group] = &[
    Group::Scope,
    Group::Credentials,
    Group::GitHub,
    Group::Runner,
    Group::Time,
    Group::Logs,
];

/// Validates what `prune` reads.
pub fn load_api(inputs: &Inputs) -> Result<ApiSettings, Problems> {
    let mut r = collect(inputs, &|s| API_GROUPS.contains(&s.group));
    let registration = r.registration();
    let github = r.github();
    let prefix = r.name_prefix();
    if prefix.is_empty() {
        r.problem(
            defs::name::RUNNER_NAME_PREFIX,
            Some(prefix.clone()),
            "is empty",
            "prune only deletes runners named PREFIX-…; an empty prefix would match every runner",
        );
    }
    let timeouts = r.timeouts();
    let log = r.log();
    let (scope, auth) = match registration {
        Some(Registration::Api { scope, auth, .. }) => (Some(scope), Some(auth)),
        Some(Registration::PreMade { .. }) => {
            r.problem(
                defs::name::ACTIONS_RUNNER_INPUT_JITCONFIG,
                None,
                "is set, but prune lists and deletes runners through the API",
                "give a scope and credentials (ACCESS_TOKEN or a GitHub App) instead",
            );
            (None, None)
        }
        None => (None, None),
    };
    if !r.problems.is_empty() {
        return Err(Problems(r.problems));
    }
    Ok(ApiSettings {
        scope: scope.expect("no problems means a scope"),
        auth: auth.expect("no problems means credentials"),
        github,
        name_prefix: prefix,
        timeouts,
        log,
    })
}

/// What `sysrunner scale` needs: the scope and credentials it alone holds, GitHub, the scale set
/// it owns, the runner containers it starts, timeouts and logs.
#[derive(Debug, Clone)]
pub struct ScaleSettings {
    pub scope: Scope,
    pub auth: Auth,
    pub github: GitHubUrls,
    /// SCALE_SET_NAME: also the prefix of its runners' names.
    pub name: String,
    /// RUNNER_LABELS, or the scale set's name.
    pub labels: Vec<String>,
    pub group: String,
    pub image: String,
    pub runtime: ScaleRuntime,
    pub allow_privileged: bool,
    pub min_runners: u32,
    pub max_runners: u32,
    pub limits: ContainerLimits,
    pub network: String,
    pub docker_socket: PathBuf,
    pub state_dir: PathBuf,
    pub listen: Option<std::net::SocketAddr>,
    /// `None`: SCALE_CACHE=off.
    pub cache: Option<ScaleCache>,
    pub timeouts: Timeouts,
    pub log: LogSettings,
    pub warnings: Vec<String>,
}

/// SCALE_CPUS, SCALE_MEMORY, SCALE_PIDS: each runner container's limits (none when unset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerLimits {
    pub nano_cpus: Option<u64>,
    pub memory: Option<u64>,
    pub pids: Option<u32>,
}

/// What `scale` reads: of the runner group only the name prefix, labels and group (its runners
/// are configured by their JIT configs); DOCKERD and the other settings of a life belong to the
/// runner image, not to the controller.
pub fn scale_reads(s: &Setting) -> bool {
    match s.group {
        Group::Scope | Group::Credentials | Group::GitHub | Group::Time | Group::Logs => true,
        Group::Scale => true,
        Group::Runner => [
            defs::name::RUNNER_NAME_PREFIX,
            defs::name::RUNNER_LABELS,
            defs::name::RUNNER_GROUP,
        ]
        .contains(&s.name),
        Group::Docker => false,
    }
}

/// Validates what `scale` reads.
pub fn load_scale(inputs: &Inputs) -> Result<ScaleSettings, Problems> {
    let mut r = collect(inputs, &scale_reads);
    let registration = r.registration();
    let github = r.github();
    let timeouts = r.timeouts();
    let log = r.log();
    let warnings = r.warnings(inputs);
    let scale = r.scale(inputs.hostname.as_deref());
    let (scope, auth) = match registration {
        Some(Registration::Api { scope, auth, .. }) => (Some(scope), Some(auth)),
        Some(Registration::PreMade { .. }) => {
            r.problem(
                defs::name::ACTIONS_RUNNER_INPUT_JITCONFIG,
                None,
                "is set, but the controller makes a JIT config for each of its runners",
                "give a scope and credentials (ACCESS_TOKEN or a GitHub App) instead",
            );
            (None, None)
        }
        None => (None, None),
    };
    if !r.problems.is_empty() {
        return Err(Problems(r.problems));
    }
    let s = scale.expect("no problems means scale settings");
    Ok(ScaleSettings {
        scope: scope.expect("no problems means a scope"),
        auth: auth.expect("no problems means credentials"),
        github,
        name: s.name,
        labels: s.labels,
        group: s.group,
        image: s.image,
        runtime: s.runtime,
        allow_privileged: s.allow_privileged,
        min_runners: s.min,
        max_runners: s.max,
        limits: s.limits,
        network: s.network,
        docker_socket: s.docker_socket,
        state_dir: s.state_dir,
        listen: s.listen,
        cache: s.cache,
        timeouts,
        log,
        warnings,
    })
}

/// What `sysrunner probe` needs: the dockerd plan's inputs, the runner release and logging.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    pub docker: DockerSettings,
    pub log: LogSettings,
    /// RUNNER_DIR: the release whose version the probe reports.
    pub runner_dir: PathBuf,
    /// RUNNER_USER: whom the release is asked its version as.
    pub runner_user: String,
}

/// actions/runner's switch for exit code 7 (see [`RunSettings::pass_deprecated_exit`]).
pub const DEPRECATED_EXIT_VAR: &str = "ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE";

/// Validates every setting `run` reads.
pub fn load_run(inputs: &Inputs) -> Result<RunSettings, Problems> {
    let (mut r, secret_files) = collect_with_files(inputs, &|s| s.group != Group::Scale);
    let registration = r.registration();
    let github = r.github();
    let runner = r.runner(inputs.hostname.as_deref(), &registration);
    let docker = r.docker();
    let timeouts = r.timeouts();
    let log = r.log();
    let warnings = r.warnings(inputs);
    if !r.problems.is_empty() {
        return Err(Problems(r.problems));
    }
    Ok(RunSettings {
        registration: registration.expect("no problems means a registration"),
        github,
        runner: runner.expect("no problems means runner settings"),
        docker,
        timeouts,
        log,
        warnings,
        secret_files,
        pass_deprecated_exit: (inputs.env)(DEPRECATED_EXIT_VAR).is_some_and(|v| v == "1"),
    })
}

/// The settings `probe` (and `dockerd-check`) read: the dockerd plan's inputs, time, logging, and
/// of the runner's only where the release is and whom to ask its version as. Credentials and
/// scope are not needed to look at a runtime.
pub fn probe_reads(s: &Setting) -> bool {
    match s.group {
        Group::Docker | Group::Time | Group::Logs => true,
        Group::Runner => [defs::name::RUNNER_DIR, defs::name::RUNNER_USER].contains(&s.name),
        Group::Scope | Group::Credentials | Group::GitHub | Group::Scale => false,
    }
}

/// Validates only what `probe` reads.
pub fn load_probe(inputs: &Inputs) -> Result<ProbeSettings, Problems> {
    let mut r = collect(inputs, &probe_reads);
    let docker = r.docker();
    let log = r.log();
    let runner_dir = r.v.runner_dir.value.clone().unwrap_or_default();
    let runner_user = r.v.runner_user.value.clone().unwrap_or_default();
    if !r.problems.is_empty() {
        return Err(Problems(r.problems));
    }
    Ok(ProbeSettings {
        docker,
        log,
        runner_dir,
        runner_user,
    })
}

/// Step one for the settings in scope, ready for step two.
fn collect(inputs: &Inputs, in_scope: &dyn Fn(&Setting) -> bool) -> Resolver {
    collect_with_files(inputs, in_scope).0
}

/// Step one, and the `*_FILE` paths secrets were read from.
fn collect_with_files(
    inputs: &Inputs,
    in_scope: &dyn Fn(&Setting) -> bool,
) -> (Resolver, Vec<PathBuf>) {
    let mut c = Collector::new(inputs, in_scope);
    let v = Values::collect(&mut c);
    (
        Resolver {
            v,
            problems: c.problems,
        },
        c.secret_files,
    )
}

/// Settings that sysrunner reads and a job must never see: every setting, the `*_FILE` paths, and
/// the variables of other runner images (one of them, RUNNER_TOKEN, is a secret).
pub fn kept_from_runner() -> impl Iterator<Item = &'static str> {
    SETTINGS
        .iter()
        .map(|s| s.name)
        .chain(FOREIGN.iter().map(|(n, _)| *n))
}

/// The REST API base for a web URL: github.com -> api.github.com, SUB.ghe.com -> api.SUB.ghe.com,
/// any other host is GitHub Enterprise Server at /api/v3.
pub fn api_base_for(web: &str) -> String {
    let u = url::Url::parse(web).expect("GITHUB_URL was validated");
    let host = u.host_str().unwrap_or_default().to_ascii_lowercase();
    if host == "github.com" || host == "www.github.com" {
        "https://api.github.com".to_string()
    } else if host.ends_with(".ghe.com") {
        let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
        format!("{}://api.{host}{port}", u.scheme())
    } else {
        format!("{}/api/v3", web.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests;
