//! One test per validation rule: each rule rejects what it must, and accepted forms are accepted.

use super::*;
use std::collections::HashMap;

const KEY: &str = include_str!("../../tests/keys/app.pem");

struct Case {
    env: HashMap<String, String>,
    flags: BTreeMap<String, String>,
    files: HashMap<PathBuf, String>,
    hostname: Option<String>,
}

impl Case {
    fn new(pairs: &[(&str, &str)]) -> Case {
        Case {
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            flags: BTreeMap::new(),
            files: HashMap::new(),
            hostname: Some("3f2a9c1d7e0b".into()),
        }
    }
    /// A repository scope with a token: the smallest valid `run` configuration.
    fn valid(extra: &[(&str, &str)]) -> Case {
        let mut c = Case::new(&[("REPO", "octo-org/octo-repo"), ("ACCESS_TOKEN", "ghp_x")]);
        for (k, v) in extra {
            c.env.insert(k.to_string(), v.to_string());
        }
        c
    }
    fn without(mut self, name: &str) -> Case {
        self.env.remove(name);
        self
    }
    fn flag(mut self, name: &str, value: &str) -> Case {
        self.flags.insert(name.into(), value.into());
        self
    }
    fn file(mut self, path: &str, content: &str) -> Case {
        self.files.insert(path.into(), content.into());
        self
    }
    fn run(&self) -> Result<RunSettings, Problems> {
        let env = |k: &str| self.env.get(k).map(OsString::from);
        let read = |p: &Path| {
            self.files
                .get(p)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        };
        load_run(&Inputs {
            flags: &self.flags,
            env: &env,
            read_file: &read,
            hostname: self.hostname.clone(),
        })
    }
    fn ok(&self) -> RunSettings {
        self.run().unwrap_or_else(|p| panic!("refused:\n{p}"))
    }
    fn scale(&self) -> Result<ScaleSettings, Problems> {
        let env = |k: &str| self.env.get(k).map(OsString::from);
        let read = |p: &Path| {
            self.files
                .get(p)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        };
        load_scale(&Inputs {
            flags: &self.flags,
            env: &env,
            read_file: &read,
            hostname: self.hostname.clone(),
        })
    }
    /// `scale`'s problems, each as its printed line.
    fn scale_refused(&self) -> Vec<String> {
        match self.scale() {
            Ok(s) => panic!("accepted: {s:?}"),
            Err(p) => p.0.iter().map(|p| p.to_string()).collect(),
        }
    }
    /// The problems, each as its printed line.
    fn refused(&self) -> Vec<String> {
        match self.run() {
            Ok(s) => panic!("accepted: {s:?}"),
            Err(p) => p.0.iter().map(|p| p.to_string()).collect(),
        }
    }
    fn refused_for(&self, var: &str) -> String {
        let lines = self.refused();
        lines
            .iter()
            .find(|l| l.starts_with(var))
            .unwrap_or_else(|| panic!("no problem names {var}: {lines:#?}"))
            .clone()
    }
}

#[test]
fn smallest_valid_configuration_gets_the_documented_defaults() {
    let s = Case::valid(&[]).ok();
    match &s.registration {
        Registration::Api { scope, auth, mode } => {
            assert_eq!(
                scope,
                &Scope::Repo {
                    owner: "octo-org".into(),
                    repo: "octo-repo".into()
                }
            );
            assert!(matches!(auth, Auth::Token(t) if t.expose() == "ghp_x"));
            assert_eq!(*mode, Mode::Jit);
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(s.github.web, "https://github.com");
    assert_eq!(s.github.api, "https://api.github.com");
    assert_eq!(s.runner.name, "sysrunner-3f2a9c1d7e0b");
    assert_eq!(s.runner.group, "Default");
    assert_eq!(s.runner.user, "runner");
    assert!(s.runner.sudo);
    assert_eq!(s.runner.dir, PathBuf::from("/opt/actions-runner"));
    assert_eq!(s.docker.mtu, None);
    assert_eq!(s.docker.data, DataPolicy::Ephemeral);
    assert_eq!(s.docker.ready_timeout, Duration::from_secs(60));
    assert_eq!(s.timeouts.drain, Duration::ZERO);
    assert_eq!(s.timeouts.stop, Duration::from_secs(9));
    assert_eq!(s.timeouts.api, Duration::from_secs(10));
    assert_eq!(s.timeouts.api_deadline, Duration::from_secs(300));
    assert_eq!(s.log.format, LogFormat::Text);
    assert!(s.warnings.is_empty());
}

#[test]
fn no_scope_is_refused() {
    let line = Case::valid(&[])
        .without("REPO")
        .refused_for("REPO, ORG or ENTERPRISE");
    assert!(line.contains("set exactly one"), "{line}");
}

#[test]
fn two_scopes_are_refused() {
    let line = Case::valid(&[("ORG", "octo-org")]).refused_for("REPO and ORG");
    assert!(line.contains("exactly one"), "{line}");
}

#[test]
fn each_scope_alone_is_accepted() {
    let s = Case::valid(&[("ORG", "octo-org")]).without("REPO").ok();
    assert!(
        matches!(s.registration, Registration::Api { scope: Scope::Org(ref o), .. } if o == "octo-org")
    );
    let s = Case::valid(&[("ENTERPRISE", "octo-ent")])
        .without("REPO")
        .ok();
    assert!(matches!(
        s.registration,
        Registration::Api {
            scope: Scope::Enterprise(_),
            ..
        }
    ));
}

#[test]
fn bad_repo_form_is_refused_with_the_value_and_an_example() {
    let line = Case::valid(&[("REPO", "octo-org")]).refused_for("REPO");
    assert!(line.contains("\"octo-org\""), "{line}");
    assert!(line.contains("REPO=octo-org/octo-repo"), "{line}");
}

#[test]
fn no_credentials_are_refused() {
    let line = Case::valid(&[])
        .without("ACCESS_TOKEN")
        .refused_for("ACCESS_TOKEN");
    assert!(line.contains("APP_ID"), "{line}");
}

#[test]
fn token_and_app_together_are_refused() {
    let line = Case::valid(&[("APP_ID", "123"), ("APP_PRIVATE_KEY", KEY)])
        .refused_for("ACCESS_TOKEN and APP_ID");
    assert!(line.contains("not both"), "{line}");
}

#[test]
fn app_credentials_are_accepted_with_either_id_form_and_escaped_newlines() {
    for id in ["123456", "Iv1.abcdef0123456789"] {
        let s = Case::valid(&[
            ("APP_ID", id),
            ("APP_PRIVATE_KEY", KEY),
            ("APP_INSTALLATION_ID", "42"),
        ])
        .without("ACCESS_TOKEN")
        .ok();
        match s.registration {
            Registration::Api {
                auth:
                    Auth::App {
                        id: got,
                        installation,
                        ..
                    },
                ..
            } => {
                assert_eq!(got, id);
                assert_eq!(installation, Some(42));
            }
            r => panic!("{r:?}"),
        }
    }
    let one_line = KEY.trim().replace('\n', "\\n");
    Case::valid(&[("APP_ID", "1"), ("APP_PRIVATE_KEY", &one_line)])
        .without("ACCESS_TOKEN")
        .ok();
}

#[test]
fn bad_app_id_is_refused() {
    let line = Case::valid(&[("APP_ID", "my-app"), ("APP_PRIVATE_KEY", KEY)])
        .without("ACCESS_TOKEN")
        .refused_for("APP_ID");
    assert!(line.contains("client id"), "{line}");
}

#[test]
fn app_id_without_key_and_key_without_id_are_refused() {
    Case::valid(&[("APP_ID", "1")])
        .without("ACCESS_TOKEN")
        .refused_for("APP_PRIVATE_KEY");
    Case::valid(&[("APP_PRIVATE_KEY", KEY)])
        .without("ACCESS_TOKEN")
        .refused_for("APP_ID");
    Case::valid(&[("APP_INSTALLATION_ID", "5")])
        .without("ACCESS_TOKEN")
        .refused_for("APP_ID");
}

#[test]
fn a_key_that_is_not_pem_rsa_is_refused_without_showing_it() {
    let c = Case::valid(&[
        ("APP_ID", "1"),
        (
            "APP_PRIVATE_KEY",
            "-----BEGIN RSA PRIVATE KEY-----\nnotakey\n-----END RSA PRIVATE KEY-----",
        ),
    ])
    .without("ACCESS_TOKEN");
    let line = c.refused_for("APP_PRIVATE_KEY");
    assert!(line.contains("PEM RSA"), "{line}");
    assert!(!line.contains("notakey"), "the key leaked: {line}");
}

#[test]
fn app_with_enterprise_is_refused() {
    let line = Case::valid(&[
        ("ENTERPRISE", "ent"),
        ("APP_ID", "1"),
        ("APP_PRIVATE_KEY", KEY),
    ])
    .without("REPO")
    .without("ACCESS_TOKEN")
    .refused_for("APP_ID");
    assert!(line.contains("enterprise"), "{line}");
    assert!(line.contains("manage_runners:enterprise"), "{line}");
}

#[test]
fn secret_files_are_read_and_trimmed() {
    let s = Case::valid(&[("ACCESS_TOKEN_FILE", "/run/secrets/token")])
        .without("ACCESS_TOKEN")
        .file("/run/secrets/token", "ghp_fromfile\n")
        .ok();
    assert!(
        matches!(s.registration, Registration::Api { auth: Auth::Token(t), .. } if t.expose() == "ghp_fromfile")
    );
    let s = Case::valid(&[("APP_ID", "7"), ("APP_PRIVATE_KEY_FILE", "/k.pem")])
        .without("ACCESS_TOKEN")
        .file("/k.pem", KEY)
        .ok();
    assert!(matches!(
        s.registration,
        Registration::Api {
            auth: Auth::App { .. },
            ..
        }
    ));
}

#[test]
fn unreadable_secret_file_is_refused_naming_the_path() {
    let line = Case::valid(&[("ACCESS_TOKEN_FILE", "/run/secrets/missing")])
        .without("ACCESS_TOKEN")
        .refused_for("ACCESS_TOKEN_FILE");
    assert!(line.contains("/run/secrets/missing"), "{line}");
    assert!(line.contains("cannot be read"), "{line}");
}

#[test]
fn a_secret_and_its_file_together_are_refused() {
    let line = Case::valid(&[("ACCESS_TOKEN_FILE", "/t")])
        .file("/t", "x")
        .refused_for("ACCESS_TOKEN");
    assert!(line.contains("ACCESS_TOKEN_FILE"), "{line}");
}

#[test]
fn file_with_a_bad_secret_is_refused_without_its_content() {
    let line = Case::valid(&[("ACCESS_TOKEN_FILE", "/t")])
        .without("ACCESS_TOKEN")
        .file("/t", "two words")
        .refused_for("ACCESS_TOKEN_FILE");
    assert!(!line.contains("two words"), "{line}");
}

#[test]
fn jit_config_needs_no_scope_or_credentials_and_refuses_them() {
    use base64::Engine;
    let jit = base64::engine::general_purpose::STANDARD.encode(r#"{".runner":"e30="}"#);
    let s = Case::new(&[("ACTIONS_RUNNER_INPUT_JITCONFIG", &jit)]).ok();
    assert!(matches!(
        s.registration,
        Registration::PreMade { scope: None, .. }
    ));
    let s = Case::new(&[("ACTIONS_RUNNER_INPUT_JITCONFIG", &jit), ("ORG", "o")]).ok();
    assert!(matches!(
        s.registration,
        Registration::PreMade {
            scope: Some(Scope::Org(_)),
            ..
        }
    ));
    let line = Case::valid(&[("ACTIONS_RUNNER_INPUT_JITCONFIG", &jit)]).refused_for("ACCESS_TOKEN");
    assert!(line.contains("ACTIONS_RUNNER_INPUT_JITCONFIG"), "{line}");
    Case::new(&[
        ("ACTIONS_RUNNER_INPUT_JITCONFIG", &jit),
        ("REGISTRATION", "config"),
    ])
    .refused_for("REGISTRATION");
    let s = Case::new(&[
        ("ACTIONS_RUNNER_INPUT_JITCONFIG", &jit),
        ("RUNNER_LABELS", "gpu"),
    ])
    .ok();
    assert!(s.warnings.iter().any(|w| w.contains("RUNNER_LABELS")));
}

#[test]
fn github_url_derives_the_api_base() {
    for (web, api) in [
        ("https://github.com", "https://api.github.com"),
        ("https://octo.ghe.com", "https://api.octo.ghe.com"),
        (
            "https://ghes.example.com",
            "https://ghes.example.com/api/v3",
        ),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/api/v3"),
    ] {
        let s = Case::valid(&[("GITHUB_URL", web)]).ok();
        assert_eq!(s.github.api, api, "{web}");
    }
    let s = Case::valid(&[
        ("GITHUB_URL", "https://ghes.example.com"),
        ("GITHUB_API_URL", "https://api.example.com/v3/"),
    ])
    .ok();
    assert_eq!(s.github.api, "https://api.example.com/v3");
}

#[test]
fn non_absolute_github_url_is_refused() {
    for bad in ["github.com", "ghes.example.com/", "/api"] {
        Case::valid(&[("GITHUB_URL", bad)]).refused_for("GITHUB_URL");
    }
    let line =
        Case::valid(&[("GITHUB_URL", "https://github.com/octo-org")]).refused_for("GITHUB_URL");
    assert!(line.contains("path"), "{line}");
}

#[test]
fn runner_name_defaults_to_prefix_and_hostname() {
    let s = Case::valid(&[("RUNNER_NAME_PREFIX", "ci")]).ok();
    assert_eq!(s.runner.name, "ci-3f2a9c1d7e0b");
    let s = Case::valid(&[("RUNNER_NAME", "exact")]).ok();
    assert_eq!(s.runner.name, "exact");
}

#[test]
fn empty_prefix_is_treated_as_unset_but_an_empty_flag_is_refused() {
    // An empty variable is unset (compose .env files leave them so): the default applies.
    let s = Case::valid(&[("RUNNER_NAME_PREFIX", "")]).ok();
    assert_eq!(s.runner.name_prefix, "sysrunner");
    Case::valid(&[])
        .flag("RUNNER_NAME_PREFIX", "")
        .refused_for("RUNNER_NAME_PREFIX");
}

#[test]
fn too_long_default_name_is_refused() {
    let mut c = Case::valid(&[]);
    c.hostname = Some("h".repeat(60));
    c.refused_for("RUNNER_NAME");
    c.hostname = None;
    c.refused_for("RUNNER_NAME");
}

#[test]
fn no_default_labels_needs_labels() {
    Case::valid(&[("RUNNER_NO_DEFAULT_LABELS", "true")]).refused_for("RUNNER_NO_DEFAULT_LABELS");
    let s = Case::valid(&[
        ("RUNNER_NO_DEFAULT_LABELS", "yes"),
        ("RUNNER_LABELS", "gpu"),
    ])
    .ok();
    assert!(s.runner.no_default_labels);
    assert_eq!(s.runner.labels, ["gpu"]);
}

#[test]
fn runner_group_other_than_default_needs_org_or_enterprise() {
    Case::valid(&[("RUNNER_GROUP", "big")]).refused_for("RUNNER_GROUP");
    Case::valid(&[("RUNNER_GROUP", "default")]).ok();
    let s = Case::valid(&[("RUNNER_GROUP", "big"), ("ORG", "o")])
        .without("REPO")
        .ok();
    assert_eq!(s.runner.group, "big");
}

#[test]
fn bad_booleans_are_refused() {
    let line = Case::valid(&[("RUNNER_SUDO", "maybe")]).refused_for("RUNNER_SUDO");
    assert!(line.contains("true or false"), "{line}");
    assert!(!Case::valid(&[("RUNNER_SUDO", "NO")]).ok().runner.sudo);
}

#[test]
fn bad_durations_are_refused_and_good_ones_read() {
    let line = Case::valid(&[("STOP_TIMEOUT", "9 seconds")]).refused_for("STOP_TIMEOUT");
    assert!(line.contains("90s"), "{line}");
    let s = Case::valid(&[
        ("DRAIN_TIMEOUT", "5m"),
        ("STOP_TIMEOUT", "20"),
        ("API_DEADLINE", "1h"),
    ])
    .ok();
    assert_eq!(s.timeouts.drain, Duration::from_secs(300));
    assert_eq!(s.timeouts.stop, Duration::from_secs(20));
    assert_eq!(s.timeouts.api_deadline, Duration::from_secs(3600));
}

#[test]
fn zero_timeouts_that_cannot_work_are_refused() {
    Case::valid(&[("STOP_TIMEOUT", "0")]).refused_for("STOP_TIMEOUT");
    Case::valid(&[("API_TIMEOUT", "0s")]).refused_for("API_TIMEOUT");
    Case::valid(&[("DOCKERD_READY_TIMEOUT", "0")]).refused_for("DOCKERD_READY_TIMEOUT");
    Case::valid(&[("API_TIMEOUT", "30s"), ("API_DEADLINE", "10s")]).refused_for("API_DEADLINE");
}

#[test]
fn registration_mode_and_docker_settings_parse() {
    let s = Case::valid(&[
        ("REGISTRATION", "config"),
        ("DOCKER_MTU", "1400"),
        ("DOCKER_DATA", "keep"),
        ("DOCKER_REGISTRY_MIRRORS", "https://mirror.example"),
        ("LOG_FORMAT", "json"),
    ])
    .ok();
    assert!(matches!(
        s.registration,
        Registration::Api {
            mode: Mode::Config,
            ..
        }
    ));
    assert_eq!(s.docker.mtu, Some(1400));
    assert_eq!(s.docker.data, DataPolicy::Keep);
    assert_eq!(s.docker.registry_mirrors, ["https://mirror.example"]);
    assert_eq!(s.log.format, LogFormat::Json);
    Case::valid(&[("REGISTRATION", "pat")]).refused_for("REGISTRATION");
    Case::valid(&[("DOCKER_DATA", "volatile")]).refused_for("DOCKER_DATA");
    Case::valid(&[("LOG_FORMAT", "xml")]).refused_for("LOG_FORMAT");
}

#[test]
fn the_registry_cache_and_its_timeout_parse_within_bounds() {
    let s = Case::valid(&[
        ("DOCKER_REGISTRY_CACHE", "http://cache:5000"),
        ("DOCKER_REGISTRY_CACHE_TIMEOUT", "500ms"),
    ])
    .ok();
    assert_eq!(
        s.docker.registry_cache.as_deref(),
        Some("http://cache:5000")
    );
    assert_eq!(s.docker.registry_cache_timeout, Duration::from_millis(500));
    let unset = Case::valid(&[("DOCKER_REGISTRY_CACHE", "")]).ok();
    assert_eq!(unset.docker.registry_cache, None, "empty is unset");
    assert_eq!(unset.docker.registry_cache_timeout, Duration::from_secs(2));
    for bad in ["0", "0ms", "61s", "1h"] {
        Case::valid(&[("DOCKER_REGISTRY_CACHE_TIMEOUT", bad)])
            .refused_for("DOCKER_REGISTRY_CACHE_TIMEOUT");
    }
    let both = Case::valid(&[
        ("DOCKER_REGISTRY_CACHE", "http://cache:5000"),
        ("DOCKER_REGISTRY_MIRRORS", "https://mirror.example"),
    ])
    .ok();
    assert!(
        both.warnings
            .iter()
            .any(|w| w.contains("DOCKER_REGISTRY_CACHE is ignored")),
        "{:?}",
        both.warnings
    );
    assert!(
        !s.warnings.iter().any(|w| w.contains("DOCKER_REGISTRY")),
        "{:?}",
        s.warnings
    );
    Case::valid(&[("DOCKER_REGISTRY_CACHE", "cache:5000")]).refused_for("DOCKER_REGISTRY_CACHE");
    Case::valid(&[("DOCKER_REGISTRY_CACHE", "http://user:pw@cache:5000")])
        .refused_for("DOCKER_REGISTRY_CACHE");
}

#[test]
fn a_flag_wins_over_the_environment() {
    let s = Case::valid(&[("RUNNER_LABELS", "from-env")])
        .flag("RUNNER_LABELS", "from-flag")
        .ok();
    assert_eq!(s.runner.labels, ["from-flag"]);
}

#[test]
fn every_problem_is_reported_at_once() {
    let lines = Case::new(&[
        ("REPO", "bad"),
        ("RUNNER_SUDO", "maybe"),
        ("STOP_TIMEOUT", "x"),
        ("DOCKER_MTU", "9"),
    ])
    .refused();
    for var in [
        "REPO",
        "RUNNER_SUDO",
        "STOP_TIMEOUT",
        "DOCKER_MTU",
        "ACCESS_TOKEN",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(var)),
            "{var} missing from {lines:#?}"
        );
    }
}

#[test]
fn a_bad_token_never_appears_in_a_message() {
    let lines = Case::valid(&[("ACCESS_TOKEN", "ghp_leak me")]).refused();
    assert!(lines.iter().all(|l| !l.contains("ghp_leak")), "{lines:#?}");
}

#[test]
fn other_images_variables_get_one_warning_each() {
    let s = Case::valid(&[
        ("EPHEMERAL", "1"),
        ("RUNNER_TOKEN", "AAAsecret"),
        ("LABELS", "x"),
        ("ORG_NAME", "o"),
        ("REPO_URL", "u"),
        ("RUNNER_SCOPE", "org"),
    ])
    .ok();
    assert_eq!(s.warnings.len(), 6, "{:#?}", s.warnings);
    assert!(
        s.warnings
            .iter()
            .any(|w| w.starts_with("LABELS") && w.contains("RUNNER_LABELS"))
    );
    assert!(s.warnings.iter().all(|w| !w.contains("AAAsecret")));
}

#[test]
fn probe_reads_only_docker_and_log_settings() {
    let env: HashMap<&str, &str> = [("DOCKER_MTU", "1400"), ("REPO", "not a repo")].into();
    let envf = |k: &str| env.get(k).map(OsString::from);
    let read = |_: &Path| Err(io::Error::from(io::ErrorKind::NotFound));
    let s = load_probe(&Inputs {
        flags: &BTreeMap::new(),
        env: &envf,
        read_file: &read,
        hostname: None,
    })
    .unwrap();
    assert_eq!(s.docker.mtu, Some(1400));
}

#[test]
fn every_setting_and_foreign_variable_is_kept_from_the_runner() {
    let kept: Vec<&str> = kept_from_runner().collect();
    for must in [
        "ACCESS_TOKEN",
        "ACCESS_TOKEN_FILE",
        "APP_PRIVATE_KEY",
        "APP_PRIVATE_KEY_FILE",
        "RUNNER_TOKEN",
        "GITHUB_API_URL",
    ] {
        assert!(kept.contains(&must), "{must}");
    }
}

#[test]
fn every_default_parses() {
    let flags = BTreeMap::new();
    let env = |_: &str| None;
    let read = |_: &Path| Err(io::Error::from(io::ErrorKind::NotFound));
    let inputs = Inputs {
        flags: &flags,
        env: &env,
        read_file: &read,
        hostname: None,
    };
    let mut c = Collector::new(&inputs, &|_| true);
    let v = Values::collect(&mut c);
    assert!(c.problems.is_empty(), "defaults refused: {:#?}", c.problems);
    assert_eq!(v.docker_data.value, Some(DataPolicy::Ephemeral));
    assert_eq!(v.registration.value, Some(Mode::Jit));
}

/// Each `X_FILE` in the table is read as `X`, and `X` is a secret: the collector pairs them by
/// hand, so a new one in the table without its pairing fails here.
#[test]
fn every_secret_file_stands_for_a_secret_setting() {
    for file in SETTINGS.iter().filter(|s| s.kind == Kind::SecretFile) {
        let target = defs::setting(file.name.trim_end_matches("_FILE"));
        assert!(
            target.kind.is_secret(),
            "{} holds {}",
            file.name,
            target.name
        );
        let value = if target.kind == Kind::RsaKey {
            KEY
        } else {
            "x"
        };
        let lines = Case::valid(&[(file.name, "/f"), (target.name, value)])
            .file("/f", value)
            .refused();
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{} and", target.name)))
            .unwrap_or_else(|| panic!("{} is not read as {}: {lines:#?}", file.name, target.name));
        assert!(line.contains(file.name), "{line}");
    }
}

/// The secrets handed off before re-executing (src/secret.rs, which reads no settings) are
/// exactly the secret settings.
#[test]
fn the_secrets_handed_off_are_the_secret_settings() {
    let secret: Vec<&str> = SETTINGS
        .iter()
        .filter(|s| s.kind.is_secret())
        .map(|s| s.name)
        .collect();
    assert_eq!(secret, crate::secret::ENV_SECRETS);
}

/// A choice's words and values come from one `choice!` list; they line up and differ.
#[test]
fn choice_words_line_up_with_their_values() {
    fn check<E: Choice + std::fmt::Debug>() {
        assert_eq!(E::WORDS.len(), E::VALUES.len());
        for (w, v) in E::WORDS.iter().zip(E::VALUES) {
            assert_eq!(v.word(), *w, "{v:?}");
        }
    }
    check::<Mode>();
    check::<DataPolicy>();
    check::<ImageStore>();
    check::<LogFormat>();
}

#[test]
fn secrets_have_no_flag() {
    for s in SETTINGS.iter().filter(|s| s.kind.is_secret()) {
        assert_eq!(s.flag(), None, "{}", s.name);
    }
    assert_eq!(
        defs::setting("ACCESS_TOKEN_FILE").flag().as_deref(),
        Some("access-token-file")
    );
}

#[test]
fn scale_defaults_name_the_set_after_the_host_and_label_it_with_its_name() {
    let s = Case::valid(&[]).scale().unwrap();
    assert_eq!(s.name, "sysrunner-3f2a9c1d7e0b");
    assert_eq!(s.labels, vec!["sysrunner-3f2a9c1d7e0b".to_string()]);
    assert_eq!((s.min_runners, s.max_runners), (0, 4));
    assert_eq!(s.runtime, ScaleRuntime::Auto);
    assert!(!s.allow_privileged);
    assert_eq!(s.limits, ContainerLimits::default());
    assert_eq!(s.network, "bridge");
    assert_eq!(s.docker_socket, Path::new("/var/run/docker.sock"));
    assert_eq!(s.listen, None);
    assert_eq!(s.group, "Default");
    let s = Case::valid(&[
        ("SCALE_SET_NAME", "ci-host1"),
        ("RUNNER_LABELS", "linux,big"),
        ("SCALE_CPUS", "1.5"),
        ("SCALE_MEMORY", "4g"),
        ("SCALE_PIDS", "4096"),
        ("SCALE_LISTEN", "9102"),
    ])
    .scale()
    .unwrap();
    assert_eq!(s.name, "ci-host1");
    assert_eq!(s.labels, vec!["linux".to_string(), "big".to_string()]);
    assert_eq!(
        s.limits,
        ContainerLimits {
            nano_cpus: Some(1_500_000_000),
            memory: Some(4 << 30),
            pids: Some(4096)
        }
    );
    assert_eq!(s.listen.unwrap().port(), 9102);
}

#[test]
fn scale_refuses_every_broken_rule_at_once_naming_each_variable() {
    let lines = Case::valid(&[
        (
            "SCALE_SET_NAME",
            "a-name-that-is-far-too-long-for-its-runners-eight-hex-suffix",
        ),
        ("SCALE_MIN_RUNNERS", "5"),
        ("SCALE_MAX_RUNNERS", "2"),
        ("SCALE_RUNTIME", "privileged"),
        ("SCALE_PIDS", "0"),
        ("SCALE_MEMORY", "lots"),
        ("SCALE_IMAGE", "Not An Image"),
    ])
    .scale_refused();
    for var in [
        "SCALE_SET_NAME",
        "SCALE_MIN_RUNNERS",
        "SCALE_RUNTIME",
        "SCALE_PIDS",
        "SCALE_MEMORY",
        "SCALE_IMAGE",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(var)),
            "no problem names {var}: {lines:#?}"
        );
    }
    let runtime = lines
        .iter()
        .find(|l| l.starts_with("SCALE_RUNTIME"))
        .unwrap();
    assert!(runtime.contains("SCALE_ALLOW_PRIVILEGED=true"), "{runtime}");
    let lines = Case::valid(&[("SCALE_MAX_RUNNERS", "0")]).scale_refused();
    assert!(
        lines[0].starts_with("SCALE_MAX_RUNNERS") && lines[0].contains("at least 1"),
        "{lines:?}"
    );
    assert!(
        Case::valid(&[
            ("SCALE_RUNTIME", "privileged"),
            ("SCALE_ALLOW_PRIVILEGED", "true")
        ])
        .scale()
        .is_ok()
    );
}

#[test]
fn scale_needs_credentials_of_its_own_not_a_jit_config() {
    use base64::Engine;
    let jit = base64::engine::general_purpose::STANDARD.encode(r#"{".runner":"e30="}"#);
    let lines =
        Case::new(&[("ACTIONS_RUNNER_INPUT_JITCONFIG", &jit), ("REPO", "o/r")]).scale_refused();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ACTIONS_RUNNER_INPUT_JITCONFIG") && l.contains("credentials")),
        "{lines:#?}"
    );
    // Without a host name, the set needs a name.
    let mut c = Case::valid(&[]);
    c.hostname = None;
    let lines = c.scale_refused();
    assert!(
        lines.iter().any(|l| l.starts_with("SCALE_SET_NAME")),
        "{lines:#?}"
    );
}

#[test]
fn run_ignores_the_scale_settings() {
    // A broken SCALE_ value does not stop a runner container's life.
    Case::valid(&[("SCALE_MAX_RUNNERS", "lots")]).ok();
}

#[test]
fn a_premade_runner_is_named_as_its_jit_config_says() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let runner = b64(r#"{"agentId":7,"agentName":"ci-host1-0000002a"}"#);
    let jit = b64(&format!(r#"{{".runner":"{runner}"}}"#));
    let s = Case::new(&[("ACTIONS_RUNNER_INPUT_JITCONFIG", &jit)]).ok();
    assert_eq!(s.runner.name, "ci-host1-0000002a");
    // Without a name in it: the prefix and the host name, for the logs.
    let jit = b64(r#"{".runner":"e30="}"#);
    let s = Case::new(&[("ACTIONS_RUNNER_INPUT_JITCONFIG", &jit)]).ok();
    assert_eq!(s.runner.name, "sysrunner-3f2a9c1d7e0b");
}
