//! The built binary with a cleared environment: GitHub Actions itself exports GITHUB_API_URL,
//! RUNNER_NAME and more, which must never leak into these tests.

use std::process::{Command, Output};

fn sysrunner(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sysrunner"));
    cmd.env_clear().args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("sysrunner runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn version_prints_the_package_version() {
    let o = sysrunner(&["--version"], &[]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o).trim(),
        format!("sysrunner {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_commands_and_exit_codes() {
    let o = sysrunner(&["--help"], &[]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    for want in ["run", "probe", "Exit codes:", " 64 ", " 78 "] {
        assert!(out.contains(want), "{want:?} missing from\n{out}");
    }
}

/// The test kit's commands are `sysrunner-testkit`'s; the product's binary knows none of them.
#[test]
fn the_product_has_no_test_commands() {
    let o = sysrunner(&["--help"], &[]);
    let help = stdout(&o);
    for cmd in ["run", "probe", "prune", "healthcheck", "dockerd-check"] {
        assert!(help.contains(cmd), "{cmd:?} missing from\n{help}");
    }
    for cmd in ["demo", "fake-github", "fake-runner", "box-init", "box-exec"] {
        assert!(!help.contains(cmd), "{cmd:?} in\n{help}");
        let o = sysrunner(&[cmd, "--help"], &[]);
        assert_eq!(o.status.code(), Some(64), "sysrunner {cmd}: {}", stderr(&o));
    }
}

#[test]
fn scale_help_lists_the_scale_settings_and_not_the_runner_containers() {
    let o = sysrunner(&["scale", "--help"], &[]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    for f in [
        "--scale-set-name",
        "--scale-max-runners",
        "--delete-scale-set",
        "--repo",
    ] {
        assert!(out.contains(f), "{f} missing:\n{out}");
    }
    assert!(!out.contains("--life-sandbox"), "{out}");
}

#[test]
fn run_help_lists_every_flag_setting_and_the_environment_only_secrets() {
    let o = sysrunner(&["run", "--help"], &[]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    // `run` reads every setting but `scale`'s own.
    for s in sysrunner::config::SETTINGS
        .iter()
        .filter(|s| s.group != sysrunner::config::Group::Scale)
    {
        match s.flag() {
            Some(f) => assert!(out.contains(&format!("--{f}")), "--{f} missing"),
            None => assert!(out.contains(s.name), "{} missing", s.name),
        }
    }
    assert!(
        !out.contains("--access-token "),
        "a secret has a value flag"
    );
}

#[test]
fn no_arguments_is_a_usage_error() {
    let o = sysrunner(&[], &[]);
    assert_eq!(o.status.code(), Some(64));
}

#[test]
fn a_secret_value_flag_does_not_exist() {
    let o = sysrunner(&["run", "--access-token", "ghp_x"], &[]);
    assert_eq!(o.status.code(), Some(64));
    assert!(!stderr(&o).contains("ghp_x"));
}

#[test]
fn run_without_settings_exits_64_naming_scope_and_credentials() {
    let o = sysrunner(&["run"], &[]);
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("error: REPO, ORG or ENTERPRISE is not set"),
        "{err}"
    );
    assert!(err.contains("error: ACCESS_TOKEN is not set"), "{err}");
    assert!(err.contains("nothing was started"), "{err}");
}

#[test]
fn every_invalid_setting_gets_its_own_line() {
    let o = sysrunner(
        &["run", "--runner-sudo", "maybe"],
        &[
            ("REPO", "octo"),
            ("ACCESS_TOKEN", "ghp_x"),
            ("STOP_TIMEOUT", "soon"),
            ("RUNNER_LABELS", "a,,b"),
        ],
    );
    assert_eq!(o.status.code(), Some(64));
    let err = stderr(&o);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 4, "{err}");
    for var in [
        "REPO=\"octo\"",
        "RUNNER_SUDO=\"maybe\"",
        "STOP_TIMEOUT=\"soon\"",
        "RUNNER_LABELS=\"a,,b\"",
    ] {
        assert!(err.contains(var), "{var} missing:\n{err}");
    }
}

#[test]
fn a_bad_secret_is_named_but_never_shown() {
    let o = sysrunner(
        &["run"],
        &[("REPO", "o/r"), ("ACCESS_TOKEN", "ghp_leaky value")],
    );
    assert_eq!(o.status.code(), Some(64));
    let err = stderr(&o);
    assert!(err.contains("ACCESS_TOKEN"), "{err}");
    assert!(!err.contains("ghp_leaky"), "{err}");
}

#[test]
fn an_unreadable_token_file_is_named_with_its_path() {
    let o = sysrunner(
        &["run", "--access-token-file", "/nonexistent/token"],
        &[("REPO", "o/r")],
    );
    assert_eq!(o.status.code(), Some(64));
    let err = stderr(&o);
    assert!(
        err.contains("ACCESS_TOKEN_FILE=\"/nonexistent/token\" cannot be read"),
        "{err}"
    );
}

#[test]
fn a_token_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "ghp_fromfile\n").unwrap();
    let o = sysrunner(
        &["run", "--access-token-file", path.to_str().unwrap()],
        &[("REPO", "o/r"), ("RUNNER_NAME", "t")],
    );
    assert_ne!(o.status.code(), Some(64), "{}", stderr(&o));
}

#[test]
fn valid_settings_pass_validation_and_other_images_variables_are_warned_about() {
    let o = sysrunner(
        &["run"],
        &[
            ("REPO", "o/r"),
            ("ACCESS_TOKEN", "ghp_x"),
            ("RUNNER_NAME", "t"),
            ("EPHEMERAL", "true"),
            ("LABELS", "x"),
        ],
    );
    let err = stderr(&o);
    assert_ne!(o.status.code(), Some(64), "{err}");
    assert_ne!(
        o.status.code(),
        Some(0),
        "nothing may print success without doing the work: {err}"
    );
    assert!(
        err.contains("EPHEMERAL is a setting of another runner image"),
        "{err}"
    );
    assert!(
        err.contains("LABELS is a setting of another runner image"),
        "{err}"
    );
    // stderr is a pipe here, as in `docker logs`: plain text, no colour codes.
    assert!(!err.contains('\x1b'), "escape codes in a pipe: {err:?}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let o = sysrunner(
        &["run"],
        &[
            ("REPO", "o/r"),
            ("ACCESS_TOKEN", "ghp_x"),
            ("RUNNER_NAME", "t"),
            ("EPHEMERAL", "1"),
            ("LOG_FORMAT", "json"),
        ],
    );
    let err = stderr(&o);
    let json_lines: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("each log line is JSON"))
        .collect();
    assert!(json_lines.iter().any(|v| v["level"] == "WARN"), "{err}");
}

#[test]
fn probe_validates_its_docker_settings() {
    let o = sysrunner(&["probe", "--docker-mtu", "9"], &[]);
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("DOCKER_MTU=\"9\""));
}

/// On a host (the initial pid namespace) `run` refuses before touching anything: no dockerd
/// files, no runner directory, no mount.
#[test]
fn run_on_the_host_exits_78_and_changes_nothing() {
    let on_host = std::fs::read_link("/proc/self/ns/pid")
        .map(|l| l.to_string_lossy() == format!("pid:[{}]", sysrunner::probe::INITIAL_PID_NS))
        .unwrap_or(false);
    if !on_host {
        eprintln!("skipped: these tests run inside a container, not on a host");
        return;
    }
    let watched = [
        "/var/lib/docker",
        "/etc/docker",
        "/run",
        "/opt/actions-runner",
        "/run/sysrunner",
    ];
    let snapshot = || -> Vec<String> {
        watched
            .iter()
            .map(|p| match std::fs::metadata(p) {
                Ok(m) => format!(
                    "{p} {:?} {}",
                    m.modified().ok(),
                    std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
                ),
                Err(_) => format!("{p} absent"),
            })
            .collect()
    };
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    let before = snapshot();
    let o = sysrunner(
        &["run"],
        &[
            ("REPO", "o/r"),
            ("ACCESS_TOKEN", "ghp_x"),
            ("RUNNER_NAME", "t"),
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(78), "{err}");
    assert!(err.contains("host"), "{err}");
    assert!(err.contains("remedy"), "{err}");
    assert_eq!(snapshot(), before);
    assert_eq!(
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .count(),
        mounts_before
    );
}
