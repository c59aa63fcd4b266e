//! The settings table: every setting sysrunner reads, declared once. `--help`, the README's
//! settings table and the list of variables kept from the runner's environment all come from here.

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

/// The parser of a setting's value: what form it takes.
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
    /// A path relative to the runner directory, or absolute.
    WorkPath,
    /// A Unix user name (not root).
    UserName,
    /// `detect`, or an MTU in bytes.
    Mtu,
    /// `90`, `90s`, `5m`, `1h`.
    Duration,
    /// A tracing filter: `info`, `debug`, `sysrunner=debug,dockerd=warn`.
    LogLevel,
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
            Kind::WorkPath => "path".into(),
            Kind::UserName => "user name".into(),
            Kind::Mtu => "`detect` or 68..65535".into(),
            Kind::Duration => "duration: `90`, `90s`, `5m`, `1h`".into(),
            Kind::LogLevel => "`error` … `trace`, or a tracing filter".into(),
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

use DefaultValue::{Derived, None as Unset, Value};
use Group::*;

/// Every setting, in the order `--help` and the README list them.
pub static SETTINGS: &[Setting] = &[
    s(
        "REPO",
        Scope,
        Kind::Repo,
        Unset,
        "Register with this repository.",
    ),
    s(
        "ORG",
        Scope,
        Kind::Slug,
        Unset,
        "Register with this organization.",
    ),
    s(
        "ENTERPRISE",
        Scope,
        Kind::Slug,
        Unset,
        "Register with this enterprise (a PAT with `manage_runners:enterprise`; Apps cannot).",
    ),
    s(
        "ACCESS_TOKEN",
        Credentials,
        Kind::Secret,
        Unset,
        "A personal access token: `repo` scope or Administration: write for REPO, `admin:org` or Self-hosted runners for ORG.",
    ),
    s(
        "ACCESS_TOKEN_FILE",
        Credentials,
        Kind::SecretFile,
        Unset,
        "Read ACCESS_TOKEN from this file (compose `secrets:`).",
    ),
    s(
        "APP_ID",
        Credentials,
        Kind::AppId,
        Unset,
        "GitHub App id, or its client id (`Iv…`); needs APP_PRIVATE_KEY.",
    ),
    s(
        "APP_PRIVATE_KEY",
        Credentials,
        Kind::RsaKey,
        Unset,
        "The App's PEM private key (`\\n` escapes are accepted).",
    ),
    s(
        "APP_PRIVATE_KEY_FILE",
        Credentials,
        Kind::SecretFile,
        Unset,
        "Read APP_PRIVATE_KEY from this file.",
    ),
    s(
        "APP_INSTALLATION_ID",
        Credentials,
        Kind::Id,
        Derived("looked up from the scope"),
        "The App installation to use.",
    ),
    s(
        "ACTIONS_RUNNER_INPUT_JITCONFIG",
        Credentials,
        Kind::JitConfig,
        Unset,
        "A JIT config made by a controller (actions-runner-controller): no API call, no credentials; scope is optional.",
    ),
    s(
        "GITHUB_URL",
        GitHub,
        Kind::Url,
        Value("https://github.com"),
        "GitHub, GHE.com (`https://SUB.ghe.com`) or GitHub Enterprise Server.",
    ),
    s(
        "GITHUB_API_URL",
        GitHub,
        Kind::Url,
        Derived("from GITHUB_URL"),
        "REST API base: `https://api.github.com`, `https://api.SUB.ghe.com`, `https://HOST/api/v3`.",
    ),
    s(
        "RUNNER_NAME",
        Runner,
        Kind::RunnerName,
        Derived("`RUNNER_NAME_PREFIX-<hostname>`"),
        "The runner's name; unique per scope, at most 64 characters.",
    ),
    s(
        "RUNNER_NAME_PREFIX",
        Runner,
        Kind::RunnerName,
        Value("sysrunner"),
        "Prefix of the default name; `sysrunner prune` only touches runners named with it.",
    ),
    s(
        "RUNNER_LABELS",
        Runner,
        Kind::Labels,
        Unset,
        "Extra labels, comma-separated.",
    ),
    s(
        "RUNNER_NO_DEFAULT_LABELS",
        Runner,
        Kind::Bool,
        Value("false"),
        "Leave out `self-hosted`, `Linux` and the architecture label (needs RUNNER_LABELS).",
    ),
    s(
        "RUNNER_GROUP",
        Runner,
        Kind::RunnerGroup,
        Value("Default"),
        "Runner group (ORG and ENTERPRISE; a repository has only `Default`).",
    ),
    s(
        "RUNNER_WORKDIR",
        Runner,
        Kind::WorkPath,
        Value("_work"),
        "Job work directory, relative to the runner directory or absolute.",
    ),
    s(
        "RUNNER_DIR",
        Runner,
        Kind::AbsPath,
        Value("/opt/actions-runner"),
        "The actions/runner release (read-only; each life runs on a fresh copy of it).",
    ),
    s(
        "RUNNER_USER",
        Runner,
        Kind::UserName,
        Value("runner"),
        "The user jobs run as; never root.",
    ),
    s(
        "RUNNER_SUDO",
        Runner,
        Kind::Bool,
        Value("true"),
        "Let jobs use passwordless sudo.",
    ),
    s(
        "REGISTRATION",
        Runner,
        Kind::Choice(&["jit", "config"]),
        Value("jit"),
        "`jit`: one generate-jitconfig call; `config`: registration token and `config.sh --ephemeral`.",
    ),
    s(
        "DOCKER_REGISTRY_MIRRORS",
        Docker,
        Kind::UrlList,
        Unset,
        "Registry mirrors for the inner dockerd.",
    ),
    s(
        "DOCKER_MTU",
        Docker,
        Kind::Mtu,
        Value("detect"),
        "MTU of the inner dockerd's networks; `detect` reads the default route's interface.",
    ),
    s(
        "DOCKER_DATA",
        Docker,
        Kind::Choice(&["ephemeral", "keep"]),
        Value("ephemeral"),
        "`ephemeral` empties the inner docker data root at every start; `keep` keeps images between jobs.",
    ),
    s(
        "DOCKER_IMAGE_STORE",
        Docker,
        Kind::Choice(&["graphdriver", "containerd"]),
        Value("graphdriver"),
        "`graphdriver`: the classic store (overlay2, or what the runtime allows); `containerd`: the containerd image store (multi-platform images), Docker 29's default on a fresh data root.",
    ),
    s(
        "DOCKERD_READY_TIMEOUT",
        Time,
        Kind::Duration,
        Value("60s"),
        "How long dockerd may take to answer `/_ping`.",
    ),
    s(
        "DRAIN_TIMEOUT",
        Time,
        Kind::Duration,
        Value("0s"),
        "After SIGTERM, how long a running job may go on before it is cancelled.",
    ),
    s(
        "STOP_TIMEOUT",
        Time,
        Kind::Duration,
        Value("9s"),
        "After the drain, the budget to deregister and stop (under compose's default 10 s grace).",
    ),
    s(
        "API_TIMEOUT",
        Time,
        Kind::Duration,
        Value("10s"),
        "Timeout of one GitHub API request.",
    ),
    s(
        "API_DEADLINE",
        Time,
        Kind::Duration,
        Value("5m"),
        "Deadline of one GitHub operation with its retries.",
    ),
    s(
        "LOG_FORMAT",
        Logs,
        Kind::Choice(&["text", "json"]),
        Value("text"),
        "`text` for people, `json` for one object per line.",
    ),
    s(
        "LOG_LEVEL",
        Logs,
        Kind::LogLevel,
        Value("info"),
        "Log level or tracing filter.",
    ),
];

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
