//! Settings: collects each setting's text (flag, else environment, else its `*_FILE`), validates
//! every value, resolves the rules that span several, and returns typed settings, or every problem
//! at once. Owns the meaning of every variable. Touches no network, writes no file, starts no
//! process: the only I/O is reading `*_FILE` secrets, through the reader it is given.

pub mod defs;
mod parse;

pub use defs::{FOREIGN, Group, Kind, SETTINGS, Setting};
pub use parse::{Bad, MAX_LABELS, MAX_RUNNER_NAME};

/// The one duration syntax (`90`, `90s`, `5m`, `1h`), for flags that are not settings.
pub fn parse_duration(raw: &str) -> Result<Duration, Bad> {
    parse::duration(raw)
}

use crate::secret::Secret;
use defs::DefaultValue as Def;
use parse::Value;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One `generate-jitconfig` call.
    Jit,
    /// A registration token and `config.sh --ephemeral`.
    Config,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPolicy {
    Ephemeral,
    Keep,
}

/// Where the inner dockerd keeps images: always said explicitly in its `daemon.json`, because
/// Docker >= 29 switches a fresh data root (every life's, with DOCKER_DATA=ephemeral) to the
/// containerd image store unless told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageStore {
    GraphDriver,
    Containerd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerSettings {
    pub registry_mirrors: Vec<String>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
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
    let mut v = Values::collect(inputs, API_GROUPS);
    let registration = v.registration();
    let github = v.github();
    let prefix = v.text("RUNNER_NAME_PREFIX").unwrap_or_default();
    if prefix.is_empty() {
        v.problem(
            "RUNNER_NAME_PREFIX",
            Some(prefix.clone()),
            "is empty",
            "prune only deletes runners named PREFIX-…; an empty prefix would match every runner",
        );
    }
    let timeouts = v.timeouts();
    let log = v.log();
    let (scope, auth) = match registration {
        Some(Registration::Api { scope, auth, .. }) => (Some(scope), Some(auth)),
        Some(Registration::PreMade { .. }) => {
            v.problem(
                "ACTIONS_RUNNER_INPUT_JITCONFIG",
                None,
                "is set, but prune lists and deletes runners through the API",
                "give a scope and credentials (ACCESS_TOKEN or a GitHub App) instead",
            );
            (None, None)
        }
        None => (None, None),
    };
    if !v.problems.is_empty() {
        return Err(Problems(v.problems));
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
    let mut v = Values::collect(inputs, &[]);
    let registration = v.registration();
    let github = v.github();
    let runner = v.runner(inputs.hostname.as_deref(), &registration);
    let docker = v.docker();
    let timeouts = v.timeouts();
    let log = v.log();
    let warnings = v.warnings(inputs);
    if !v.problems.is_empty() {
        return Err(Problems(v.problems));
    }
    Ok(RunSettings {
        registration: registration.expect("no problems means a registration"),
        github,
        runner: runner.expect("no problems means runner settings"),
        docker,
        timeouts,
        log,
        warnings,
        secret_files: v.secret_files.clone(),
        pass_deprecated_exit: (inputs.env)(DEPRECATED_EXIT_VAR).is_some_and(|v| v == "1"),
    })
}

/// Validates only what `probe` reads; credentials and scope are not needed to look at a runtime.
pub fn load_probe(inputs: &Inputs) -> Result<ProbeSettings, Problems> {
    let mut v = Values::collect(
        inputs,
        &[Group::Runner, Group::Docker, Group::Time, Group::Logs],
    );
    // Of the runner's settings only these two matter to a probe; the others' problems are run's.
    v.problems.retain(|p| {
        ["RUNNER_DIR", "RUNNER_USER"].contains(&p.var.as_str())
            || SETTINGS
                .iter()
                .all(|s| s.name != p.var || s.group != Group::Runner)
    });
    let docker = v.docker();
    let log = v.log();
    let runner_dir = PathBuf::from(v.text("RUNNER_DIR").unwrap_or_default());
    let runner_user = v.text("RUNNER_USER").unwrap_or_default();
    if !v.problems.is_empty() {
        return Err(Problems(v.problems));
    }
    Ok(ProbeSettings {
        docker,
        log,
        runner_dir,
        runner_user,
    })
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

/// The values of the settings in scope, parsed one by one, and the problems found so far.
struct Values {
    parsed: BTreeMap<&'static str, Value>,
    /// Settings given explicitly (not defaulted), by name.
    given: Vec<&'static str>,
    /// The `*_FILE` paths secrets were read from.
    secret_files: Vec<PathBuf>,
    problems: Vec<Problem>,
}

impl Values {
    /// Parses every setting in `groups` (every setting when empty): the flag's value, else the
    /// environment's (an empty variable counts as unset, as compose `.env` files leave them), else
    /// the default.
    fn collect(inputs: &Inputs, groups: &[Group]) -> Values {
        let mut v = Values {
            parsed: BTreeMap::new(),
            given: Vec::new(),
            secret_files: Vec::new(),
            problems: Vec::new(),
        };
        for s in SETTINGS
            .iter()
            .filter(|s| groups.is_empty() || groups.contains(&s.group))
        {
            let text = match (inputs.flags.get(s.name), (inputs.env)(s.name)) {
                (Some(f), _) => Some(f.clone()),
                (None, Some(e)) if e.is_empty() => None,
                (None, Some(e)) => match e.into_string() {
                    Ok(t) => Some(t),
                    Err(_) => {
                        v.problem(s.name, None, "is not valid UTF-8", "set it to plain text");
                        continue;
                    }
                },
                (None, None) => None,
            };
            let text = match text {
                Some(t) => {
                    v.given.push(s.name);
                    t
                }
                None => match s.default {
                    Def::Value(d) => d.to_string(),
                    Def::None | Def::Derived(_) => continue,
                },
            };
            match parse::parse(s.kind, s.name, &text) {
                Ok(value) => {
                    v.parsed.insert(s.name, value);
                }
                Err(bad) => {
                    let shown = (!s.kind.is_secret()).then_some(text);
                    v.problem(s.name, shown, &bad.what, &bad.fix);
                }
            }
        }
        v.read_secret_files(inputs);
        v
    }

    /// `X_FILE` stands for `X`: read it, parse the content as `X`, and record it under `X`.
    fn read_secret_files(&mut self, inputs: &Inputs) {
        for file_setting in SETTINGS.iter().filter(|s| s.kind == Kind::SecretFile) {
            let Some(Value::Text(path)) = self.parsed.remove(file_setting.name) else {
                continue;
            };
            let target = defs::setting(file_setting.name.trim_end_matches("_FILE"));
            if self.given.contains(&target.name) {
                self.problem(
                    target.name,
                    None,
                    &format!("and {} are both set", file_setting.name),
                    "set only one of them (the file keeps the secret out of the environment)",
                );
                continue;
            }
            let content = match (inputs.read_file)(Path::new(&path)) {
                Ok(c) => c,
                Err(e) => {
                    self.problem(
                        file_setting.name,
                        Some(path.clone()),
                        &format!("cannot be read ({e})"),
                        "mount the file (compose `secrets:`) or fix the path",
                    );
                    continue;
                }
            };
            match parse::parse(target.kind, target.name, &content) {
                Ok(value) => {
                    self.parsed.insert(target.name, value);
                    self.given.push(target.name);
                    self.secret_files.push(PathBuf::from(&path));
                }
                Err(bad) => self.problem(
                    file_setting.name,
                    Some(path),
                    &format!("holds a value that {}", bad.what),
                    &bad.fix,
                ),
            }
        }
    }

    fn problem(&mut self, var: &str, value: Option<String>, what: &str, fix: &str) {
        self.problems.push(Problem {
            var: var.to_string(),
            value,
            what: what.to_string(),
            fix: fix.to_string(),
        });
    }

    fn text(&self, name: &str) -> Option<String> {
        match self.parsed.get(name) {
            Some(Value::Text(t)) => Some(t.clone()),
            _ => None,
        }
    }

    fn secret(&self, name: &str) -> Option<Secret> {
        match self.parsed.get(name) {
            Some(Value::Secret(s)) => Some(s.clone()),
            _ => None,
        }
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.parsed.get(name), Some(Value::Bool(true)))
    }

    fn duration(&self, name: &str) -> Duration {
        match self.parsed.get(name) {
            Some(Value::Duration(d)) => *d,
            // A bad value was already reported; the default keeps the rest of the checks going.
            _ => match defs::setting(name).default {
                Def::Value(d) => parse::duration(d).expect("defaults parse"),
                _ => Duration::ZERO,
            },
        }
    }

    fn list(&self, name: &str) -> Vec<String> {
        match self.parsed.get(name) {
            Some(Value::List(l)) => l.clone(),
            _ => Vec::new(),
        }
    }

    fn scope(&mut self) -> Result<Option<Scope>, ()> {
        let set: Vec<&str> = ["REPO", "ORG", "ENTERPRISE"]
            .into_iter()
            .filter(|n| self.given.contains(n))
            .collect();
        if set.len() > 1 {
            self.problem(
                &set.join(" and "),
                None,
                "are both set",
                "set exactly one scope: REPO, ORG or ENTERPRISE",
            );
            return Err(());
        }
        Ok(if let Some(r) = self.text("REPO") {
            let (owner, repo) = r.split_once('/').expect("REPO was validated");
            Some(Scope::Repo {
                owner: owner.into(),
                repo: repo.into(),
            })
        } else if let Some(o) = self.text("ORG") {
            Some(Scope::Org(o))
        } else {
            self.text("ENTERPRISE").map(Scope::Enterprise)
        })
    }

    fn registration(&mut self) -> Option<Registration> {
        let scope = self.scope();
        let cred_vars: Vec<&'static str> = [
            "ACCESS_TOKEN",
            "APP_ID",
            "APP_PRIVATE_KEY",
            "APP_INSTALLATION_ID",
        ]
        .into_iter()
        .filter(|n| self.given.contains(n))
        .collect();

        if self.given.contains(&"ACTIONS_RUNNER_INPUT_JITCONFIG") {
            if !cred_vars.is_empty() {
                self.problem(
                    &cred_vars.join(", "),
                    None,
                    "given together with ACTIONS_RUNNER_INPUT_JITCONFIG",
                    "a controller that made the JIT config owns the registration: remove the credentials, or remove the JIT config to let sysrunner register",
                );
            }
            if self.text("REGISTRATION").as_deref() == Some("config")
                && self.given.contains(&"REGISTRATION")
            {
                self.problem(
                    "REGISTRATION",
                    Some("config".into()),
                    "conflicts with ACTIONS_RUNNER_INPUT_JITCONFIG",
                    "a JIT config is already a registration: remove REGISTRATION",
                );
            }
            let jit_config = self.secret("ACTIONS_RUNNER_INPUT_JITCONFIG")?;
            return Some(Registration::PreMade {
                jit_config,
                scope: scope.ok().flatten(),
            });
        }

        let scope = match scope {
            Ok(Some(s)) => Some(s),
            Ok(None) => {
                if !["REPO", "ORG", "ENTERPRISE"]
                    .iter()
                    .any(|n| self.problems.iter().any(|p| p.var == *n))
                {
                    self.problem(
                        "REPO, ORG or ENTERPRISE",
                        None,
                        "is not set",
                        "set exactly one, e.g. REPO=octo-org/octo-repo or ORG=octo-org",
                    );
                }
                None
            }
            Err(()) => None,
        };

        let token = self.secret("ACCESS_TOKEN");
        let app_given = ["APP_ID", "APP_PRIVATE_KEY", "APP_INSTALLATION_ID"]
            .iter()
            .any(|n| self.given.contains(n));
        let cred_problem = [
            "ACCESS_TOKEN",
            "ACCESS_TOKEN_FILE",
            "APP_ID",
            "APP_PRIVATE_KEY",
            "APP_PRIVATE_KEY_FILE",
            "APP_INSTALLATION_ID",
        ]
        .iter()
        .any(|n| self.problems.iter().any(|p| p.var == *n));
        let auth = match (self.given.contains(&"ACCESS_TOKEN"), app_given) {
            (true, true) => {
                self.problem(
                    "ACCESS_TOKEN and APP_ID",
                    None,
                    "are both given",
                    "use either a token or a GitHub App, not both",
                );
                None
            }
            (true, false) => token.map(Auth::Token),
            (false, true) => self.app_auth(scope.as_ref()),
            (false, false) => {
                if !cred_problem {
                    self.problem(
                        "ACCESS_TOKEN",
                        None,
                        "is not set, and neither is a GitHub App",
                        "set ACCESS_TOKEN (or ACCESS_TOKEN_FILE), or APP_ID with APP_PRIVATE_KEY (or APP_PRIVATE_KEY_FILE)",
                    );
                }
                None
            }
        };
        let mode = match self.text("REGISTRATION").as_deref() {
            Some("config") => Mode::Config,
            _ => Mode::Jit,
        };
        Some(Registration::Api {
            scope: scope?,
            auth: auth?,
            mode,
        })
    }

    fn app_auth(&mut self, scope: Option<&Scope>) -> Option<Auth> {
        let id = self.text("APP_ID");
        let key = self.secret("APP_PRIVATE_KEY");
        if !self.given.contains(&"APP_ID") {
            self.problem(
                "APP_ID",
                None,
                "is not set, but other App settings are",
                "set APP_ID to the App's id or client id",
            );
        }
        if !self.given.contains(&"APP_PRIVATE_KEY") {
            self.problem(
                "APP_PRIVATE_KEY",
                None,
                "is not set, but APP_ID is",
                "set APP_PRIVATE_KEY_FILE to the App's .pem file (or APP_PRIVATE_KEY to its content)",
            );
        }
        if let Some(Scope::Enterprise(_)) = scope {
            self.problem(
                "APP_ID",
                id.clone(),
                "is set with ENTERPRISE: GitHub Apps cannot manage enterprise runners",
                "use ACCESS_TOKEN with a classic PAT that has manage_runners:enterprise",
            );
            return None;
        }
        let installation = match self.parsed.get("APP_INSTALLATION_ID") {
            Some(Value::Number(n)) => Some(*n),
            _ => None,
        };
        Some(Auth::App {
            id: id?,
            key: key?,
            installation,
        })
    }

    fn github(&mut self) -> GitHubUrls {
        let web = self
            .text("GITHUB_URL")
            .unwrap_or_else(|| "https://github.com".into());
        if let Ok(u) = url::Url::parse(&web)
            && u.path() != "/"
        {
            self.problem(
                "GITHUB_URL",
                Some(web.clone()),
                "has a path",
                "give the server only, e.g. https://ghes.example.com; the scope goes in REPO, ORG or ENTERPRISE",
            );
        }
        let api = self
            .text("GITHUB_API_URL")
            .unwrap_or_else(|| api_base_for(&web));
        GitHubUrls { web, api }
    }

    fn runner(
        &mut self,
        hostname: Option<&str>,
        registration: &Option<Registration>,
    ) -> Option<RunnerSettings> {
        let prefix = self.text("RUNNER_NAME_PREFIX").unwrap_or_default();
        if prefix.is_empty() && self.parsed.contains_key("RUNNER_NAME_PREFIX") {
            self.problem(
                "RUNNER_NAME_PREFIX",
                Some(prefix.clone()),
                "is empty",
                "leave it unset for `sysrunner`, or give a prefix: prune only deletes runners named with it",
            );
        }
        let premade = matches!(registration, Some(Registration::PreMade { .. }));
        let name = match self.text("RUNNER_NAME") {
            Some(n) => Some(n),
            // Already reported as a problem.
            None if self.given.contains(&"RUNNER_NAME") => None,
            // A JIT config carries its own name; this one is only for our logs.
            None if premade => Some(format!("{prefix}-{}", hostname.unwrap_or("jit"))),
            None => match hostname.filter(|h| !h.is_empty()) {
                Some(h) => {
                    let n = format!("{prefix}-{h}");
                    if n.len() > MAX_RUNNER_NAME {
                        self.problem(
                            "RUNNER_NAME",
                            Some(n),
                            &format!("(RUNNER_NAME_PREFIX-<hostname>) is longer than {MAX_RUNNER_NAME} characters"),
                            "set a shorter RUNNER_NAME_PREFIX or RUNNER_NAME",
                        );
                        None
                    } else {
                        Some(n)
                    }
                }
                None => {
                    self.problem(
                        "RUNNER_NAME",
                        None,
                        "is not set and the host name is unknown",
                        "set RUNNER_NAME",
                    );
                    None
                }
            },
        };
        let labels = self.list("RUNNER_LABELS");
        let no_default_labels = self.flag("RUNNER_NO_DEFAULT_LABELS");
        if no_default_labels
            && labels.is_empty()
            && !self.problems.iter().any(|p| p.var == "RUNNER_LABELS")
        {
            self.problem(
                "RUNNER_NO_DEFAULT_LABELS",
                Some("true".into()),
                "leaves the runner without labels: RUNNER_LABELS is empty",
                "set RUNNER_LABELS, or RUNNER_NO_DEFAULT_LABELS=false",
            );
        }
        let group = self
            .text("RUNNER_GROUP")
            .unwrap_or_else(|| "Default".into());
        if let Some(Registration::Api {
            scope: Scope::Repo { .. },
            ..
        }) = registration
            && !group.eq_ignore_ascii_case("Default")
        {
            self.problem(
                "RUNNER_GROUP",
                Some(group.clone()),
                "is set with REPO: repositories have no runner groups",
                "remove RUNNER_GROUP, or register with ORG to use groups",
            );
        }
        Some(RunnerSettings {
            name: name?,
            name_prefix: prefix,
            labels,
            no_default_labels,
            group,
            workdir: self
                .text("RUNNER_WORKDIR")
                .unwrap_or_else(|| "_work".into()),
            dir: PathBuf::from(self.text("RUNNER_DIR")?),
            user: self.text("RUNNER_USER")?,
            sudo: self.flag("RUNNER_SUDO"),
        })
    }

    fn docker(&mut self) -> DockerSettings {
        let ready_timeout = self.duration("DOCKERD_READY_TIMEOUT");
        if ready_timeout.is_zero() {
            self.problem(
                "DOCKERD_READY_TIMEOUT",
                Some("0".into()),
                "is zero",
                "give dockerd at least a few seconds, e.g. 60s",
            );
        }
        DockerSettings {
            registry_mirrors: self.list("DOCKER_REGISTRY_MIRRORS"),
            image_store: match self.text("DOCKER_IMAGE_STORE").as_deref() {
                Some("containerd") => ImageStore::Containerd,
                _ => ImageStore::GraphDriver,
            },
            mtu: match self.parsed.get("DOCKER_MTU") {
                Some(Value::Mtu(m)) => *m,
                _ => None,
            },
            data: match self.text("DOCKER_DATA").as_deref() {
                Some("keep") => DataPolicy::Keep,
                _ => DataPolicy::Ephemeral,
            },
            ready_timeout,
        }
    }

    fn timeouts(&mut self) -> Timeouts {
        let t = Timeouts {
            drain: self.duration("DRAIN_TIMEOUT"),
            stop: self.duration("STOP_TIMEOUT"),
            api: self.duration("API_TIMEOUT"),
            api_deadline: self.duration("API_DEADLINE"),
        };
        if t.stop.is_zero() {
            self.problem(
                "STOP_TIMEOUT",
                Some("0".into()),
                "is zero: no time to deregister",
                "give at least 1s; keep it under the supervisor's grace period (compose: 10s)",
            );
        }
        if t.api.is_zero() {
            self.problem(
                "API_TIMEOUT",
                Some("0".into()),
                "is zero",
                "give at least 1s, e.g. 10s",
            );
        }
        if t.api_deadline < t.api {
            self.problem(
                "API_DEADLINE",
                Some(format!("{}s", t.api_deadline.as_secs())),
                &format!("is shorter than API_TIMEOUT ({}s)", t.api.as_secs()),
                "make API_DEADLINE at least API_TIMEOUT, e.g. 5m",
            );
        }
        t
    }

    fn log(&mut self) -> LogSettings {
        LogSettings {
            format: match self.text("LOG_FORMAT").as_deref() {
                Some("json") => LogFormat::Json,
                _ => LogFormat::Text,
            },
            level: self.text("LOG_LEVEL").unwrap_or_else(|| "info".into()),
        }
    }

    fn warnings(&self, inputs: &Inputs) -> Vec<String> {
        let mut w: Vec<String> = FOREIGN
            .iter()
            .filter(|(name, _)| (inputs.env)(name).is_some_and(|v| !v.is_empty()))
            .map(|(name, instead)| {
                format!("{name} is a setting of another runner image and is ignored; sysrunner's equivalent: {instead}")
            })
            .collect();
        if self.given.contains(&"ACTIONS_RUNNER_INPUT_JITCONFIG") {
            for name in [
                "RUNNER_NAME",
                "RUNNER_LABELS",
                "RUNNER_NO_DEFAULT_LABELS",
                "RUNNER_GROUP",
                "RUNNER_WORKDIR",
            ] {
                if self.given.contains(&name) {
                    w.push(format!("{name} is ignored: the JIT config from ACTIONS_RUNNER_INPUT_JITCONFIG already fixes it"));
                }
            }
        }
        w
    }
}

#[cfg(test)]
mod tests;
