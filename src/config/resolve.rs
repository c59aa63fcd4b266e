//! Step two of settings: the rules that span several settings (exactly one scope, one kind of
//! credentials, a JIT config alone, labels for RUNNER_NO_DEFAULT_LABELS, …), read from step one's
//! typed [`Values`] and turned into the typed settings `run`, `probe` and `prune` use. Every rule
//! broken adds a [`Problem`] beside step one's, so one restart fixes them all. No I/O.

use super::defs::{FOREIGN, Values, name::*};
use super::parse::Choice;
use super::values::Field;
use super::*;
use std::time::Duration;

pub struct Resolver {
    pub v: Values,
    pub problems: Vec<Problem>,
}

impl Resolver {
    pub fn problem(&mut self, var: &str, value: Option<String>, what: &str, fix: &str) {
        self.problems.push(Problem {
            var: var.to_string(),
            value,
            what: what.to_string(),
            fix: fix.to_string(),
        });
    }

    fn scope(&mut self) -> Result<Option<Scope>, ()> {
        let set: Vec<&str> = [
            &self.v.repo.given,
            &self.v.org.given,
            &self.v.enterprise.given,
        ]
        .into_iter()
        .zip([REPO, ORG, ENTERPRISE])
        .filter(|(given, _)| **given)
        .map(|(_, name)| name)
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
        Ok(if let Some(repo) = self.v.repo.value.clone() {
            Some(repo)
        } else if let Some(o) = self.v.org.value.clone() {
            Some(Scope::Org(o))
        } else {
            self.v.enterprise.value.clone().map(Scope::Enterprise)
        })
    }

    pub fn registration(&mut self) -> Option<Registration> {
        let scope = self.scope();
        let v = &self.v;
        let cred_vars: Vec<&'static str> = [
            (v.access_token.name(), v.access_token.given),
            (v.app_id.name(), v.app_id.given),
            (v.app_private_key.name(), v.app_private_key.given),
            (v.app_installation_id.name(), v.app_installation_id.given),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect();

        if v.actions_runner_input_jitconfig.given {
            if !cred_vars.is_empty() {
                self.problem(
                    &cred_vars.join(", "),
                    None,
                    "given together with ACTIONS_RUNNER_INPUT_JITCONFIG",
                    "a controller that made the JIT config owns the registration: remove the credentials, or remove the JIT config to let sysrunner register",
                );
            }
            if self.v.registration.given && self.v.registration.value == Some(Mode::Config) {
                self.problem(
                    REGISTRATION,
                    Some(Mode::Config.word().into()),
                    "conflicts with ACTIONS_RUNNER_INPUT_JITCONFIG",
                    "a JIT config is already a registration: remove REGISTRATION",
                );
            }
            let jit_config = self.v.actions_runner_input_jitconfig.value.clone()?;
            return Some(Registration::PreMade {
                jit_config,
                scope: scope.ok().flatten(),
            });
        }

        let scope = match scope {
            Ok(Some(s)) => Some(s),
            Ok(None) => {
                let v = &self.v;
                if ![v.repo.reported, v.org.reported, v.enterprise.reported].contains(&true) {
                    self.problem(
                        &format!("{REPO}, {ORG} or {ENTERPRISE}"),
                        None,
                        "is not set",
                        "set exactly one, e.g. REPO=octo-org/octo-repo or ORG=octo-org",
                    );
                }
                None
            }
            Err(()) => None,
        };

        let v = &self.v;
        let token = v.access_token.value.clone();
        let app_given = v.app_id.given || v.app_private_key.given || v.app_installation_id.given;
        let cred_problem = v.access_token.reported
            || v.access_token_file.reported
            || v.app_id.reported
            || v.app_private_key.reported
            || v.app_private_key_file.reported
            || v.app_installation_id.reported;
        let auth = match (v.access_token.given, app_given) {
            (true, true) => {
                self.problem(
                    &format!("{ACCESS_TOKEN} and {APP_ID}"),
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
                        ACCESS_TOKEN,
                        None,
                        "is not set, and neither is a GitHub App",
                        "set ACCESS_TOKEN (or ACCESS_TOKEN_FILE), or APP_ID with APP_PRIVATE_KEY (or APP_PRIVATE_KEY_FILE)",
                    );
                }
                None
            }
        };
        Some(Registration::Api {
            scope: scope?,
            auth: auth?,
            mode: self.v.registration.or_default()?,
        })
    }

    fn app_auth(&mut self, scope: Option<&Scope>) -> Option<Auth> {
        let id = self.v.app_id.value.clone();
        let key = self.v.app_private_key.value.clone();
        if !self.v.app_id.given {
            self.problem(
                APP_ID,
                None,
                "is not set, but other App settings are",
                "set APP_ID to the App's id or client id",
            );
        }
        if !self.v.app_private_key.given {
            self.problem(
                APP_PRIVATE_KEY,
                None,
                "is not set, but APP_ID is",
                "set APP_PRIVATE_KEY_FILE to the App's .pem file (or APP_PRIVATE_KEY to its content)",
            );
        }
        if let Some(Scope::Enterprise(_)) = scope {
            self.problem(
                APP_ID,
                id.clone(),
                "is set with ENTERPRISE: GitHub Apps cannot manage enterprise runners",
                "use ACCESS_TOKEN with a classic PAT that has manage_runners:enterprise",
            );
            return None;
        }
        Some(Auth::App {
            id: id?,
            key: key?,
            installation: self.v.app_installation_id.value,
        })
    }

    pub fn github(&mut self) -> GitHubUrls {
        let web = self
            .v
            .github_url
            .or_default()
            .expect("GITHUB_URL has a default");
        if let Ok(u) = url::Url::parse(&web)
            && u.path() != "/"
        {
            self.problem(
                GITHUB_URL,
                Some(web.clone()),
                "has a path",
                "give the server only, e.g. https://ghes.example.com; the scope goes in REPO, ORG or ENTERPRISE",
            );
        }
        let api = self
            .v
            .github_api_url
            .value
            .clone()
            .unwrap_or_else(|| api_base_for(&web));
        GitHubUrls { web, api }
    }

    /// RUNNER_NAME_PREFIX as `prune` and the default name use it: empty when refused.
    pub fn name_prefix(&self) -> String {
        self.v.runner_name_prefix.value.clone().unwrap_or_default()
    }

    pub fn runner(
        &mut self,
        hostname: Option<&str>,
        registration: &Option<Registration>,
    ) -> Option<RunnerSettings> {
        let prefix = self.name_prefix();
        if self.v.runner_name_prefix.value.as_deref() == Some("") {
            self.problem(
                RUNNER_NAME_PREFIX,
                Some(prefix.clone()),
                "is empty",
                "leave it unset for `sysrunner`, or give a prefix: prune only deletes runners named with it",
            );
        }
        let premade = matches!(registration, Some(Registration::PreMade { .. }));
        let name = match self.v.runner_name.value.clone() {
            Some(n) => Some(n),
            // Already reported as a problem.
            None if self.v.runner_name.given => None,
            // A JIT config carries its own name: the one GitHub knows, for our logs.
            None if premade => Some(
                match registration {
                    Some(Registration::PreMade { jit_config, .. }) => {
                        super::parse::jit_agent_name(jit_config.expose())
                    }
                    _ => None,
                }
                .unwrap_or_else(|| format!("{prefix}-{}", hostname.unwrap_or("jit"))),
            ),
            None => match hostname.filter(|h| !h.is_empty()) {
                Some(h) => {
                    let n = format!("{prefix}-{h}");
                    if n.len() > MAX_RUNNER_NAME {
                        self.problem(
                            RUNNER_NAME,
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
                        RUNNER_NAME,
                        None,
                        "is not set and the host name is unknown",
                        "set RUNNER_NAME",
                    );
                    None
                }
            },
        };
        let labels = self.v.runner_labels.value.clone().unwrap_or_default();
        let no_default_labels = self.v.runner_no_default_labels.value == Some(true);
        if no_default_labels && labels.is_empty() && !self.v.runner_labels.reported {
            self.problem(
                RUNNER_NO_DEFAULT_LABELS,
                Some("true".into()),
                "leaves the runner without labels: RUNNER_LABELS is empty",
                "set RUNNER_LABELS, or RUNNER_NO_DEFAULT_LABELS=false",
            );
        }
        let group = self
            .v
            .runner_group
            .or_default()
            .expect("RUNNER_GROUP has a default");
        if let Some(Registration::Api {
            scope: Scope::Repo { .. },
            ..
        }) = registration
            && !group.eq_ignore_ascii_case("Default")
        {
            self.problem(
                RUNNER_GROUP,
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
                .v
                .runner_workdir
                .or_default()
                .expect("RUNNER_WORKDIR has a default"),
            dir: self.v.runner_dir.value.clone()?,
            user: self.v.runner_user.value.clone()?,
            sudo: self.v.runner_sudo.value == Some(true),
            sandbox: self
                .v
                .life_sandbox
                .or_default()
                .expect("LIFE_SANDBOX has a default"),
            life_binds: self.v.life_binds.value.clone().unwrap_or_default(),
        })
    }

    pub fn docker(&mut self) -> DockerSettings {
        let ready_timeout = duration(&self.v.dockerd_ready_timeout);
        if ready_timeout.is_zero() {
            self.problem(
                DOCKERD_READY_TIMEOUT,
                Some("0".into()),
                "is zero",
                "give dockerd at least a few seconds, e.g. 60s",
            );
        }
        let cache_timeout = duration(&self.v.docker_registry_cache_timeout);
        if cache_timeout.is_zero() {
            self.problem(
                DOCKER_REGISTRY_CACHE_TIMEOUT,
                Some("0".into()),
                "is zero",
                "give the cache time to answer, e.g. 2s, or unset DOCKER_REGISTRY_CACHE to use none",
            );
        } else if cache_timeout > Duration::from_secs(60) {
            self.problem(
                DOCKER_REGISTRY_CACHE_TIMEOUT,
                Some(format!("{}s", cache_timeout.as_secs())),
                "is longer than a minute: every life would wait that long for a cache that hangs",
                "give a few seconds, e.g. 2s (a cache on the same host answers in milliseconds)",
            );
        }
        let v = &self.v;
        DockerSettings {
            dockerd: v.dockerd.or_default().expect("DOCKERD has a default"),
            registry_mirrors: v.docker_registry_mirrors.value.clone().unwrap_or_default(),
            registry_cache: v.docker_registry_cache.value.clone(),
            registry_cache_timeout: cache_timeout,
            image_store: v
                .docker_image_store
                .or_default()
                .expect("DOCKER_IMAGE_STORE has a default"),
            mtu: v.docker_mtu.value.flatten(),
            data: v
                .docker_data
                .or_default()
                .expect("DOCKER_DATA has a default"),
            ready_timeout,
        }
    }

    /// The scale group's rules: a set name that fits with its runners' suffix, min ≤ max, max ≥ 1,
    /// privileged only when allowed.
    pub fn scale(&mut self, hostname: Option<&str>) -> Option<ScaleParts> {
        let prefix = self.name_prefix();
        // `<name>-<8 hex>` must stay a runner name.
        let longest = MAX_RUNNER_NAME - 9;
        let name = match self.v.scale_set_name.value.clone() {
            Some(n) => Some(n),
            None if self.v.scale_set_name.given => None,
            None => match hostname.filter(|h| !h.is_empty()) {
                Some(h) => Some(format!("{prefix}-{h}")),
                None => {
                    self.problem(
                        SCALE_SET_NAME,
                        None,
                        "is not set and the host name is unknown",
                        "set SCALE_SET_NAME, one per host, e.g. sysrunner-host1",
                    );
                    None
                }
            },
        };
        if let Some(n) = &name
            && n.len() > longest
        {
            self.problem(
                SCALE_SET_NAME,
                Some(n.clone()),
                &format!("is longer than {longest} characters, so `<name>-<8 hex>` would not be a runner name"),
                "set a shorter SCALE_SET_NAME",
            );
        }
        let min = self.v.scale_min_runners.or_default();
        let max = self.v.scale_max_runners.or_default();
        if max == Some(0) {
            self.problem(
                SCALE_MAX_RUNNERS,
                Some("0".into()),
                "is zero: no job could ever run",
                "give at least 1",
            );
        }
        if let (Some(lo), Some(hi)) = (min, max)
            && lo > hi
        {
            self.problem(
                SCALE_MIN_RUNNERS,
                Some(lo.to_string()),
                &format!("is more than SCALE_MAX_RUNNERS ({hi})"),
                "make SCALE_MIN_RUNNERS at most SCALE_MAX_RUNNERS",
            );
        }
        let runtime = self.v.scale_runtime.or_default();
        let allow_privileged = self.v.scale_allow_privileged.or_default() == Some(true);
        if runtime == Some(ScaleRuntime::Privileged) && !allow_privileged {
            self.problem(
                SCALE_RUNTIME,
                Some("privileged".into()),
                "asks for privileged runner containers, in which a job is root on the host",
                "install sysbox and use SCALE_RUNTIME=sysbox, or set SCALE_ALLOW_PRIVILEGED=true to accept it",
            );
        }
        if self.v.scale_pids.value == Some(0) {
            self.problem(
                SCALE_PIDS,
                Some("0".into()),
                "is zero: no process could start",
                "leave it unset for no limit, or give e.g. 4096",
            );
        }
        let labels = match self.v.runner_labels.value.clone() {
            Some(l) if !l.is_empty() => Some(l),
            Some(_) | None if self.v.runner_labels.given => None,
            _ => name.clone().map(|n| vec![n]),
        };
        Some(ScaleParts {
            name: name?,
            labels: labels?,
            group: self.v.runner_group.or_default()?,
            image: self.v.scale_image.or_default()?,
            runtime: runtime?,
            allow_privileged,
            min: min?,
            max: max?,
            limits: ContainerLimits {
                nano_cpus: self.v.scale_cpus.value,
                memory: self.v.scale_memory.value,
                pids: self.v.scale_pids.value,
            },
            network: self.v.scale_network.or_default()?,
            docker_socket: self.v.scale_docker_socket.or_default()?,
            state_dir: self.v.scale_state_dir.or_default()?,
            listen: self.v.scale_listen.value,
            cache: match self.v.scale_cache.or_default()? {
                ScaleCacheMode::Off => None,
                ScaleCacheMode::Auto => Some(ScaleCache {
                    name: self.v.scale_cache_name.or_default()?,
                    image: self.v.scale_cache_image.or_default()?,
                }),
            },
        })
    }

    pub fn timeouts(&mut self) -> Timeouts {
        let t = Timeouts {
            drain: duration(&self.v.drain_timeout),
            stop: duration(&self.v.stop_timeout),
            api: duration(&self.v.api_timeout),
            api_deadline: duration(&self.v.api_deadline),
        };
        if t.stop.is_zero() {
            self.problem(
                STOP_TIMEOUT,
                Some("0".into()),
                "is zero: no time to deregister",
                "give at least 1s; keep it under the supervisor's grace period (compose: 10s)",
            );
        }
        if t.api.is_zero() {
            self.problem(
                API_TIMEOUT,
                Some("0".into()),
                "is zero",
                "give at least 1s, e.g. 10s",
            );
        }
        if t.api_deadline < t.api {
            self.problem(
                API_DEADLINE,
                Some(format!("{}s", t.api_deadline.as_secs())),
                &format!("is shorter than API_TIMEOUT ({}s)", t.api.as_secs()),
                "make API_DEADLINE at least API_TIMEOUT, e.g. 5m",
            );
        }
        t
    }

    pub fn log(&self) -> LogSettings {
        LogSettings {
            format: self
                .v
                .log_format
                .or_default()
                .expect("LOG_FORMAT has a default"),
            level: self
                .v
                .log_level
                .or_default()
                .expect("LOG_LEVEL has a default"),
        }
    }

    pub fn warnings(&self, inputs: &Inputs) -> Vec<String> {
        let mut w: Vec<String> = FOREIGN
            .iter()
            .filter(|(name, _)| (inputs.env)(name).is_some_and(|v| !v.is_empty()))
            .map(|(name, instead)| {
                format!("{name} is a setting of another runner image and is ignored; sysrunner's equivalent: {instead}")
            })
            .collect();
        let v = &self.v;
        if v.actions_runner_input_jitconfig.given {
            for (name, given) in [
                (v.runner_name.name(), v.runner_name.given),
                (v.runner_labels.name(), v.runner_labels.given),
                (
                    v.runner_no_default_labels.name(),
                    v.runner_no_default_labels.given,
                ),
                (v.runner_group.name(), v.runner_group.given),
                (v.runner_workdir.name(), v.runner_workdir.given),
            ] {
                if given {
                    w.push(format!("{name} is ignored: the JIT config from ACTIONS_RUNNER_INPUT_JITCONFIG already fixes it"));
                }
            }
        }
        if v.docker_registry_cache.given && v.docker_registry_mirrors.given {
            w.push("DOCKER_REGISTRY_CACHE is ignored: DOCKER_REGISTRY_MIRRORS is set and wins; unset one of them".into());
        }
        w
    }
}

/// A duration setting; a refused one counts as its default, which keeps the checks going.
fn duration(f: &Field<Duration>) -> Duration {
    f.or_default().unwrap_or(Duration::ZERO)
}

/// What [`Resolver::scale`] resolves, before the scope and credentials join it.
pub struct ScaleParts {
    pub name: String,
    pub labels: Vec<String>,
    pub group: String,
    pub image: String,
    pub runtime: ScaleRuntime,
    pub allow_privileged: bool,
    pub min: u32,
    pub max: u32,
    pub limits: ContainerLimits,
    pub network: String,
    pub docker_socket: PathBuf,
    pub state_dir: PathBuf,
    pub listen: Option<std::net::SocketAddr>,
    pub cache: Option<ScaleCache>,
}
