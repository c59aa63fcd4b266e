//! The deployment files as text: the hosted workflows (`.github/workflows`), the hosted image legs'
//! script, the Dockerfiles and `image/install.sh`. What they do only runs on GitHub's machines;
//! what they say, and whether the parts agree with each other, is checked here: every failure
//! names the file and what is wrong in it.

use serde_yaml_ng::Value;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

const CI: &str = ".github/workflows/ci.yml";
const BUMP: &str = ".github/workflows/bump-runner.yml";
const LEG: &str = ".ci/hosted-image-leg";
const SYSBOX_DOCKERFILE: &str = "Dockerfile.sysbox";
const INSTALL: &str = "image/install.sh";

fn text(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: cannot read it: {e}"))
}

fn yaml(file: &str) -> Value {
    serde_yaml_ng::from_str(&text(file)).unwrap_or_else(|e| panic!("{file}: not YAML: {e}"))
}

/// A scalar as the workflow's runner sees it: YAML numbers and booleans become their text.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn env_block(v: &Value) -> BTreeMap<String, String> {
    v.get("env")
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), scalar(v)?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The environment a step runs with: the workflow's `env`, then the job's, then the step's.
fn step_env(workflow: &Value, job: &Value, step: &Value) -> BTreeMap<String, String> {
    let mut env = env_block(workflow);
    env.extend(env_block(job));
    env.extend(env_block(step));
    env
}

fn jobs(file: &str, workflow: &Value) -> Vec<(String, Value)> {
    workflow
        .get("jobs")
        .and_then(Value::as_mapping)
        .unwrap_or_else(|| panic!("{file}: no jobs"))
        .iter()
        .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), v.clone()))
        .collect()
}

fn job(file: &str, workflow: &Value, name: &str) -> Value {
    workflow
        .get("jobs")
        .and_then(|j| j.get(name))
        .cloned()
        .unwrap_or_else(|| panic!("{file}: no job `{name}`"))
}

fn steps(job: &Value) -> Vec<Value> {
    job.get("steps")
        .and_then(Value::as_sequence)
        .cloned()
        .unwrap_or_default()
}

fn run_of(step: &Value) -> &str {
    step.get("run").and_then(Value::as_str).unwrap_or_default()
}

fn uses_of(step: &Value) -> &str {
    step.get("uses").and_then(Value::as_str).unwrap_or_default()
}

/// Evaluates `${{ … }}` with the values one run of the workflow would give them. Only the
/// expressions the checked jobs use are known; any other is an error naming it, so a new one is
/// added here deliberately rather than compared as text.
fn expand(text: &str) -> Result<String, String> {
    let known = [
        ("github.run_id", "17171717171"),
        ("github.run_attempt", "1"),
        ("github.repository", "octo-org/octo-repo"),
        (
            "secrets.SYSRUNNER_E2E_TOKEN",
            "ghp_e2eSecret000000000000000000000000000",
        ),
    ];
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .ok_or_else(|| format!("unterminated expression in {text:?}"))?;
        let expr = rest[start + 3..start + end].trim();
        let value = known
            .iter()
            .find(|(k, _)| *k == expr)
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("unknown expression `{expr}` in {text:?}"))?;
        out.push_str(value);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The words of one shell command line as bash splits them: quotes removed, `$NAME` and
/// `${NAME}` replaced from `env` (an unknown name stays as written, so a caller can see it was
/// not resolved). Backslash-newline continuations must already be joined.
fn shell_words(line: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    fn variable(chars: &mut std::iter::Peekable<std::str::Chars>) -> String {
        let mut name = String::new();
        if chars.peek() == Some(&'{') {
            chars.next();
            for c in chars.by_ref() {
                if c == '}' {
                    break;
                }
                name.push(c);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    name.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
        }
        name
    }
    let lookup = |name: &str| env.get(name).cloned().unwrap_or_else(|| format!("${name}"));
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        '$' => word.push_str(&lookup(&variable(&mut chars))),
                        _ => word.push(c),
                    }
                }
            }
            '$' => {
                in_word = true;
                word.push_str(&lookup(&variable(&mut chars)));
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            _ => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The `-e NAME=VALUE` / `-e NAME` settings of the `docker run` command in a step's script.
fn docker_run_env(
    file: &str,
    job_name: &str,
    script: &str,
    env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let joined = script.replace("\\\n", " ");
    let line = joined
        .lines()
        .find(|l| l.contains("docker run"))
        .unwrap_or_else(|| panic!("{file}: job `{job_name}` runs no `docker run`"));
    let words = shell_words(line, env);
    let mut settings = BTreeMap::new();
    let mut i = 0;
    while i < words.len() {
        let arg = match words[i].as_str() {
            "-e" | "--env" => {
                i += 1;
                words.get(i).cloned()
            }
            w => w.strip_prefix("--env=").map(str::to_string),
        };
        if let Some(arg) = arg {
            let (name, value) = match arg.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => (arg.clone(), env.get(&arg).cloned().unwrap_or_default()),
            };
            assert!(
                !value.contains('$'),
                "{file}: job `{job_name}` passes -e {name}={value}, a variable the step does not set"
            );
            settings.insert(name, value);
        }
        i += 1;
    }
    settings
}

/// `FROM` … up to the next `FROM`: (the FROM line, the stage's instructions). Comments are left
/// out: the one above a `FROM` describes the next stage, not the one it sits in.
fn stages(dockerfile: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in dockerfile.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        if line.starts_with("FROM ") {
            out.push((line.to_string(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

fn stage_name(from: &str) -> Option<&str> {
    let words: Vec<&str> = from.split_whitespace().collect();
    words
        .iter()
        .position(|w| w.eq_ignore_ascii_case("AS"))
        .and_then(|i| words.get(i + 1).copied())
}

fn is_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

fn arg_value<'a>(stage: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("ARG {name}=");
    stage.lines().find_map(|l| l.strip_prefix(prefix.as_str()))
}

/// A shell function's body in a bash script: from `name() {` to the first `}` in column 0.
fn function_body(file: &str, script: &str, name: &str) -> String {
    let start = script
        .find(&format!("\n{name}() {{"))
        .unwrap_or_else(|| panic!("{file}: no function {name}()"));
    let body = &script[start + 1..];
    let end = body.find("\n}").unwrap_or(body.len());
    body[..end].to_string()
}

/// The step of `file` whose script runs `command`, with its job and its environment.
fn step_running(
    file: &str,
    workflow: &Value,
    command: &str,
) -> (String, Value, BTreeMap<String, String>) {
    for (name, job) in jobs(file, workflow) {
        for step in steps(&job) {
            if run_of(&step).contains(command) {
                let env = step_env(workflow, &job, &step);
                return (name, step, env);
            }
        }
    }
    panic!("{file}: no step runs `{command}`")
}

// ---- 1. the hosted sysbox leg

#[test]
fn sysbox_deb_is_named_without_dash_zero_since_0_6_7() {
    let workflow = yaml(CI);
    let (job_name, _, env) = step_running(CI, &workflow, "hosted-image-leg install-sysbox");
    let version = env.get("SYSBOX_VERSION").unwrap_or_else(|| {
        panic!("{CI}: job `{job_name}` installs sysbox without SYSBOX_VERSION in its env")
    });
    assert!(
        is_version(version) && version.starts_with("0.7."),
        "{CI}: SYSBOX_VERSION={version}: expected a 0.7.x release (Docker >= 28.5.2 inside needs sysbox >= 0.7.0)"
    );

    let script = text(LEG);
    let body = function_body(LEG, &script, "install_sysbox");
    let assigned = body
        .lines()
        .find_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("local ").unwrap_or(l);
            l.strip_prefix("deb=")
        })
        .unwrap_or_else(|| panic!("{LEG}: install_sysbox() sets no deb= file name"));
    let mut deb = assigned.trim_matches('"').to_string();
    for var in [
        "${version}",
        "$version",
        "${SYSBOX_VERSION}",
        "$SYSBOX_VERSION",
    ] {
        deb = deb.replace(var, version);
    }
    let want = format!("sysbox-ce_{version}.linux_amd64.deb");
    assert_eq!(
        deb, want,
        "{LEG}: install_sysbox() downloads {deb}; sysbox's release assets are named \
         sysbox-ce_<version>.linux_<arch>.deb since 0.6.7, with no -0"
    );
}

#[test]
fn sysbox_deb_is_checked_against_its_sha256_before_it_is_installed() {
    let script = text(LEG);
    let body = function_body(LEG, &script, "install_sysbox");
    let check = body.find("sha256sum -c").unwrap_or_else(|| {
        panic!("{LEG}: install_sysbox() installs the sysbox .deb without `sha256sum -c`")
    });
    assert!(
        body.contains("SYSBOX_SHA256"),
        "{LEG}: install_sysbox() does not read SYSBOX_SHA256"
    );
    let install = body
        .find("apt-get install")
        .unwrap_or_else(|| panic!("{LEG}: install_sysbox() never installs the .deb"));
    assert!(
        check < install,
        "{LEG}: install_sysbox() installs the .deb before `sha256sum -c` checks it"
    );
}

#[test]
fn sysbox_deb_sha256_is_pinned_in_the_workflow() {
    let workflow = yaml(CI);
    let (job_name, _, env) = step_running(CI, &workflow, "hosted-image-leg install-sysbox");
    let sum = env.get("SYSBOX_SHA256").map(String::as_str).unwrap_or("");
    assert!(
        sum.len() == 64 && sum.chars().all(|c| c.is_ascii_hexdigit()),
        "{CI}: job `{job_name}` installs sysbox {} with SYSBOX_SHA256={sum:?}; expected the 64-hex \
         SHA-256 nestybox/sysbox's docs/user-guide/install-package.md lists for the amd64 .deb",
        env.get("SYSBOX_VERSION").map(String::as_str).unwrap_or("?")
    );
}

// ---- 2. the e2e runner and the job meant for it

/// The labels GitHub gives the runner: `self-hosted`, `Linux` and the architecture unless
/// RUNNER_NO_DEFAULT_LABELS, then RUNNER_LABELS, read by sysrunner's own settings code.
fn e2e_runner_labels(workflow: &Value) -> (Vec<String>, BTreeMap<String, String>) {
    let runner = job(CI, workflow, "e2e-runner");
    let step = steps(&runner)
        .into_iter()
        .find(|s| run_of(s).contains("docker run"))
        .unwrap_or_else(|| panic!("{CI}: job `e2e-runner` has no step that runs the image"));
    let env: BTreeMap<String, String> = step_env(workflow, &runner, &step)
        .into_iter()
        .map(|(k, v)| {
            let v = expand(&v).unwrap_or_else(|e| panic!("{CI}: job `e2e-runner`, env {k}: {e}"));
            (k, v)
        })
        .collect();
    let settings = docker_run_env(CI, "e2e-runner", run_of(&step), &env);

    let token_path = settings.get("ACCESS_TOKEN_FILE").cloned();
    let lookup = |k: &str| settings.get(k).map(OsString::from);
    let read = |p: &Path| {
        if token_path.as_deref().map(Path::new) == Some(p) {
            Ok("ghp_e2eSecret000000000000000000000000000".to_string())
        } else {
            Err(std::io::Error::from(std::io::ErrorKind::NotFound))
        }
    };
    let flags = BTreeMap::new();
    let run = sysrunner::config::load_run(&sysrunner::config::Inputs {
        flags: &flags,
        env: &lookup,
        read_file: &read,
        hostname: Some("3f2a9c1d7e0b".into()),
    })
    .unwrap_or_else(|p| {
        panic!("{CI}: job `e2e-runner` starts sysrunner with settings it refuses:\n{p}")
    });

    // GitHub-hosted machines are X64 unless the label says arm.
    let machine = runner.get("runs-on").and_then(scalar).unwrap_or_default();
    let arch = if machine.contains("arm") {
        "ARM64"
    } else {
        "X64"
    };
    let mut labels: Vec<String> = if run.runner.no_default_labels {
        Vec::new()
    } else {
        vec!["self-hosted".into(), "Linux".into(), arch.into()]
    };
    for l in run.runner.labels {
        if !labels.iter().any(|a| a.eq_ignore_ascii_case(&l)) {
            labels.push(l);
        }
    }
    (labels, settings)
}

#[test]
fn e2e_job_asks_only_for_labels_the_e2e_runner_has() {
    let workflow = yaml(CI);
    let (labels, settings) = e2e_runner_labels(&workflow);
    let e2e_job = job(CI, &workflow, "e2e-job");
    let runs_on = e2e_job
        .get("runs-on")
        .unwrap_or_else(|| panic!("{CI}: job `e2e-job` has no runs-on"));
    let asked: Vec<String> = match runs_on {
        Value::Sequence(s) => s.iter().filter_map(scalar).collect(),
        Value::Mapping(_) => runs_on
            .get("labels")
            .and_then(Value::as_sequence)
            .map(|s| s.iter().filter_map(scalar).collect())
            .unwrap_or_default(),
        v => scalar(v).into_iter().collect(),
    };
    assert!(!asked.is_empty(), "{CI}: job `e2e-job` asks for no label");
    for label in &asked {
        let label = expand(label).unwrap_or_else(|e| panic!("{CI}: job `e2e-job` runs-on: {e}"));
        // GitHub matches labels case-insensitively.
        assert!(
            labels.iter().any(|l| l.eq_ignore_ascii_case(&label)),
            "{CI}: job `e2e-job` asks for the label `{label}`, which the runner job `e2e-runner` \
             registers does not have: it has {labels:?} (RUNNER_LABELS={:?}, RUNNER_NO_DEFAULT_LABELS={:?}); \
             the job would wait for a runner that never comes",
            settings
                .get("RUNNER_LABELS")
                .map(String::as_str)
                .unwrap_or(""),
            settings
                .get("RUNNER_NO_DEFAULT_LABELS")
                .map(String::as_str)
                .unwrap_or("false"),
        );
    }
}

// ---- 3. Docker and containerd pinned, and bumped with the runner

#[test]
fn docker_and_containerd_are_pinned_where_the_image_installs_them() {
    let dockerfile = text(SYSBOX_DOCKERFILE);
    let (_, system) = stages(&dockerfile)
        .into_iter()
        .find(|(_, body)| body.contains("install.sh system"))
        .unwrap_or_else(|| panic!("{SYSBOX_DOCKERFILE}: no stage runs `install.sh system`"));
    for name in ["DOCKER_VERSION", "CONTAINERD_VERSION"] {
        let value = arg_value(&system, name).unwrap_or_else(|| {
            panic!("{SYSBOX_DOCKERFILE}: the stage that runs `install.sh system` has no `ARG {name}=` with a default")
        });
        assert!(
            is_version(value),
            "{SYSBOX_DOCKERFILE}: ARG {name}={value}: expected a pinned X.Y.Z version"
        );
    }

    let install = text(INSTALL);
    assert!(
        install.contains("CONTAINERD_VERSION"),
        "{INSTALL}: never reads CONTAINERD_VERSION"
    );
    let joined = install.replace("\\\n", " ");
    let floating: Vec<&str> = joined
        .lines()
        .filter(|l| {
            (l.contains("apt_install") || l.contains("apt-get install"))
                && l.split_whitespace()
                    .any(|w| w.trim_matches('"') == "containerd.io")
        })
        .collect();
    assert!(
        floating.is_empty(),
        "{INSTALL}: installs containerd.io (and with it runc) at whatever version the repository \
         has, not at CONTAINERD_VERSION: {floating:#?}"
    );
    assert!(
        joined.contains("\"containerd.io="),
        "{INSTALL}: installs no `containerd.io=<version>`"
    );
}

#[test]
fn bump_workflow_rewrites_runner_docker_and_containerd() {
    let workflow = yaml(BUMP);
    let scripts: String = jobs(BUMP, &workflow)
        .iter()
        .flat_map(|(_, j)| steps(j))
        .map(|s| run_of(&s).to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let dockerfile = text(SYSBOX_DOCKERFILE);
    for name in ["RUNNER_VERSION", "DOCKER_VERSION", "CONTAINERD_VERSION"] {
        assert!(
            scripts.contains(&format!("s/^ARG {name}=")),
            "{BUMP}: never rewrites `ARG {name}=` in {SYSBOX_DOCKERFILE}"
        );
        assert!(
            scripts.contains(&format!("\"ARG {name}=${{")),
            "{BUMP}: rewrites `ARG {name}=` but never confirms the rewritten line with grep -x"
        );
        assert!(
            dockerfile
                .lines()
                .any(|l| l.starts_with(&format!("ARG {name}="))),
            "{SYSBOX_DOCKERFILE}: has no line starting `ARG {name}=`, the line {BUMP} rewrites"
        );
    }
}

// ---- 4. the Rust stage, built for both platforms before a release

#[test]
fn rust_stage_cross_compiles_on_the_build_platform() {
    let dockerfile = text(SYSBOX_DOCKERFILE);
    let (from, body) = stages(&dockerfile)
        .into_iter()
        .find(|(_, body)| body.contains("cargo build"))
        .unwrap_or_else(|| panic!("{SYSBOX_DOCKERFILE}: no stage runs `cargo build`"));
    let name = stage_name(&from).unwrap_or("?");
    assert!(
        from.contains("--platform=$BUILDPLATFORM") || from.contains("--platform=${BUILDPLATFORM}"),
        "{SYSBOX_DOCKERFILE}: stage {name} (`{from}`) runs on the target's platform: an arm64 \
         image built on amd64 runs rustc under QEMU; expected FROM --platform=$BUILDPLATFORM"
    );
    for needed in [
        "aarch64-unknown-linux-gnu",
        "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
        "CC_aarch64_unknown_linux_gnu",
        "AR_aarch64_unknown_linux_gnu",
        "TARGETARCH",
    ] {
        assert!(
            body.contains(needed),
            "{SYSBOX_DOCKERFILE}: stage {name} never mentions {needed}: it cannot cross-compile \
             for arm64 (aws-lc-sys builds C for the target)"
        );
    }
}

#[test]
fn hosted_ci_builds_the_rust_stage_for_amd64_and_arm64() {
    let dockerfile = text(SYSBOX_DOCKERFILE);
    let (from, _) = stages(&dockerfile)
        .into_iter()
        .find(|(_, body)| body.contains("cargo build"))
        .unwrap_or_else(|| panic!("{SYSBOX_DOCKERFILE}: no stage runs `cargo build`"));
    let stage = stage_name(&from)
        .unwrap_or_else(|| {
            panic!("{SYSBOX_DOCKERFILE}: the stage that runs cargo build has no name")
        })
        .to_string();

    let workflow = yaml(CI);
    assert!(
        workflow
            .get("on")
            .and_then(|on| on.get("pull_request"))
            .is_some(),
        "{CI}: does not run on pull_request"
    );
    let builds_stage = |step: &Value| {
        let with = step.get("with");
        let field = |k: &str| {
            with.and_then(|w| w.get(k))
                .and_then(scalar)
                .unwrap_or_default()
        };
        if uses_of(step).starts_with("docker/build-push-action@") {
            let platforms = field("platforms");
            field("target") == stage
                && field("file") == SYSBOX_DOCKERFILE
                && platforms.contains("linux/amd64")
                && platforms.contains("linux/arm64")
        } else {
            let run = run_of(step);
            run.contains("docker buildx build")
                && (run.contains(&format!("--target {stage}"))
                    || run.contains(&format!("--target={stage}")))
                && run.contains(SYSBOX_DOCKERFILE)
                && run.contains("linux/amd64")
                && run.contains("linux/arm64")
        }
    };
    let (name, job) = jobs(CI, &workflow)
        .into_iter()
        .find(|(_, j)| steps(j).iter().any(builds_stage))
        .unwrap_or_else(|| {
        panic!(
            "{CI}: no job builds {SYSBOX_DOCKERFILE}'s Rust stage `{stage}` for linux/amd64 and \
             linux/arm64: a broken Rust stage would first show in a release"
        )
    });
    assert!(
        steps(&job)
            .iter()
            .any(|s| uses_of(s).starts_with("docker/setup-buildx-action@")),
        "{CI}: job `{name}` builds for two platforms without docker/setup-buildx-action"
    );
}

// ---- 5. what the workflows say of self-updates

#[test]
fn no_workflow_claims_the_runner_never_self_updates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".github/workflows");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let file = format!(
            ".github/workflows/{}",
            path.file_name().unwrap().to_string_lossy()
        );
        // Comments and strings read as prose: no comment markers, one space between words.
        let prose = text(&file)
            .lines()
            .map(|l| l.trim().trim_start_matches('#'))
            .collect::<Vec<_>>()
            .join(" ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        for (at, _) in prose.match_indices("never ") {
            let after: String = prose[at..].chars().take(40).collect();
            assert!(
                !(after.contains("self-update")
                    || after.contains("update itself")
                    || after.contains("updates itself")),
                "{file}: claims the runner never updates itself (\"{after}…\"); a JIT runner cannot \
                 be registered with --disableupdate and updates itself once it is behind"
            );
        }
    }
}
