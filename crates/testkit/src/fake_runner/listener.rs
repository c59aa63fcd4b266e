//! The fake `bin/Runner.Listener`: `run`, `configure`, `remove`, as actions/runner's listener does
//! them (REFERENCE.md section 4), against the fake GitHub's runner protocol.
//!
//! Knobs for tests (environment):
//! - `FAKE_RUNNER_EXIT=<code>`: after `Listening for Jobs`, exit with `<code>` instead of taking a
//!   job, the first `FAKE_RUNNER_EXIT_TIMES` (default 1) starts of a life; 3 and 4 also write
//!   `update.finished` a moment later, as a finished self-update does.
//! - `FAKE_RUNNER_ORPHANS=<n>`: leave `n` grandchildren behind that exit just after the listener.

use base64::Engine;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn ts() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        now.year(),
        now.month() as u8,
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `--name value` options and bare flags; values may come from `ACTIONS_RUNNER_INPUT_<NAME>`.
struct Opts {
    values: BTreeMap<String, String>,
    flags: Vec<String>,
}

const VALUED: &[&str] = &[
    "url",
    "token",
    "name",
    "labels",
    "runnergroup",
    "work",
    "jitconfig",
    "pat",
];

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        values: BTreeMap::new(),
        flags: Vec::new(),
    };
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let Some(name) = a.strip_prefix("--") else {
            return Err(format!("Unrecognized command-line input arguments: '{a}'"));
        };
        if name.contains('=') {
            // The real runner does not parse --x=value either.
            return Err(format!("Unrecognized command-line input arguments: '{a}'"));
        }
        let name = name.to_ascii_lowercase();
        if VALUED.contains(&name.as_str()) {
            let v = args.get(i + 1).ok_or(format!("--{name} needs a value"))?;
            o.values.insert(name, v.clone());
            i += 2;
        } else {
            o.flags.push(name);
            i += 1;
        }
    }
    for k in VALUED {
        if !o.values.contains_key(*k)
            && let Ok(v) = std::env::var(format!("ACTIONS_RUNNER_INPUT_{}", k.to_ascii_uppercase()))
            && !v.is_empty()
        {
            o.values.insert(k.to_string(), v);
        }
    }
    Ok(o)
}

impl Opts {
    fn get(&self, k: &str) -> Option<&str> {
        self.values.get(k).map(String::as_str)
    }
    fn has(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
}

fn root_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("bin/Runner.Listener"));
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Not the real runner's: how a test tells this listener from one of an earlier build (see
    // `binaries`). Before the root check, which a harness running as root would trip.
    if args.first().map(String::as_str) == Some(crate::binaries::BUILD_ID_COMMAND) {
        say(crate::BUILD_ID);
        return 0;
    }
    if nix::unistd::geteuid().is_root()
        && std::env::var("RUNNER_ALLOW_RUNASROOT")
            .unwrap_or_default()
            .is_empty()
    {
        say("Must not run with sudo");
        return 1;
    }
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => ("run", &[][..]),
    };
    if cmd == "--version" {
        say(super::VERSION);
        return 0;
    }
    let opts = match parse_opts(rest) {
        Ok(o) => o,
        Err(e) => {
            say(&e);
            return 1;
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let root = root_dir();
    match cmd {
        "run" => rt.block_on(run(&root, &opts)),
        "configure" => rt.block_on(configure(&root, &opts)),
        "remove" => rt.block_on(remove(&root, &opts)),
        other => {
            say(&format!("Unknown command: {other}"));
            1
        }
    }
}

struct Identity {
    server: String,
    /// The session the fake GitHub gave; empty until one is open.
    session: String,
    /// How often to renew a running job (the session's answer says; 0 until one is open).
    renew_secs: u64,
    work: String,
    ephemeral: bool,
    secret: String,
}

fn write_triple(root: &Path, triple: &Value) -> Result<(), String> {
    for f in [".runner", ".credentials", ".credentials_rsaparams"] {
        // A JIT config carries each file base64-encoded; the config exchange as JSON.
        let bytes = match triple.get(f) {
            Some(Value::String(b)) => B64.decode(b).map_err(|e| format!("{f}: {e}"))?,
            Some(v @ Value::Object(_)) => {
                serde_json::to_vec_pretty(v).map_err(|e| format!("{f}: {e}"))?
            }
            _ => return Err(format!("no {f} in the configuration")),
        };
        std::fs::write(root.join(f), bytes).map_err(|e| format!("write {f}: {e}"))?;
    }
    Ok(())
}

fn read_identity(root: &Path) -> Result<Identity, String> {
    let read = |f: &str| -> Result<Value, String> {
        let t = std::fs::read_to_string(root.join(f)).map_err(|e| format!("{f}: {e}"))?;
        serde_json::from_str(t.trim_start_matches('\u{feff}')).map_err(|e| format!("{f}: {e}"))
    };
    let runner = read(".runner")?;
    let params = read(".credentials_rsaparams")?;
    Ok(Identity {
        session: String::new(),
        renew_secs: 0,
        server: runner["serverUrl"]
            .as_str()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string(),
        work: runner["workFolder"].as_str().unwrap_or("_work").to_string(),
        ephemeral: runner["ephemeral"].as_bool().unwrap_or(true),
        secret: params["fakeRunnerSecret"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

fn remove_identity(root: &Path) {
    if std::fs::remove_file(root.join(".credentials")).is_ok() {
        let _ = std::fs::remove_file(root.join(".credentials_rsaparams"));
        say("√ Removed .credentials");
    }
    if std::fs::remove_file(root.join(".runner")).is_ok() {
        say("√ Removed .runner");
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("fake-actions-runner/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Our environment for a job step: the listener's, minus every runner input.
fn job_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| !k.starts_with("ACTIONS_RUNNER_INPUT_"))
        .collect()
}

fn knob(name: &str) -> Option<i64> {
    std::env::var(name).ok()?.parse().ok()
}

/// How often this life has used the exit knob (counted in the runner directory, which is fresh
/// every life).
fn take_exit_knob(root: &Path) -> Option<i32> {
    let code = knob("FAKE_RUNNER_EXIT")? as i32;
    let times = knob("FAKE_RUNNER_EXIT_TIMES").unwrap_or(1);
    let counter = root.join("_diag/fake-exits");
    let used: i64 = std::fs::read_to_string(&counter)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if used >= times {
        return None;
    }
    let _ = std::fs::create_dir_all(root.join("_diag"));
    let _ = std::fs::write(&counter, (used + 1).to_string());
    Some(code)
}

fn leave_orphans(n: i64) {
    for _ in 0..n {
        // sh exits at once; its background sleep is re-parented (to sysrunner, the subreaper).
        let _ = std::process::Command::new("sh")
            .args(["-c", "sleep 0.5 &"])
            .status();
    }
}

async fn run(root: &Path, opts: &Opts) -> i32 {
    if let Some(b64) = opts.get("jitconfig") {
        let decoded = B64
            .decode(b64.trim())
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        let Some(triple) = decoded else {
            say("The JIT config is not valid base64 JSON.");
            return 1;
        };
        if let Err(e) = write_triple(root, &triple) {
            say(&e);
            return 1;
        }
    }
    let id = match read_identity(root) {
        Ok(i) => i,
        Err(_) => {
            say("Not configured. Run config.(sh/cmd) to configure the runner.");
            return 1;
        }
    };
    let client = http();
    say("");
    say("√ Connected to GitHub");
    say("");
    say(&format!("Current runner version: '{}'", super::VERSION));
    let session = client
        .post(format!("{}/_fake/runner/session", id.server))
        .bearer_auth(&id.secret)
        .json(&json!({"os": "Linux", "version": super::VERSION}))
        .send()
        .await;
    let (session_id, renew_secs) = match session {
        Ok(r) if r.status().is_success() => match r.json::<Value>().await {
            Ok(v) => (
                v["session_id"].as_str().unwrap_or_default().to_string(),
                v["renew_secs"].as_u64().unwrap_or(0),
            ),
            Err(e) => {
                say(&format!("{}: bad session answer: {e}", ts()));
                return 2;
            }
        },
        Ok(r) if r.status().as_u16() == 403 => {
            // actions/runner: an AccessDeniedException with errorCode 1 is "version deprecated":
            // exit 7 only when asked to, else the generic terminated error.
            let body: Value = r.json().await.unwrap_or_default();
            say(&format!(
                "{}: {}",
                ts(),
                body["message"].as_str().unwrap_or("Access denied")
            ));
            let deprecated = body["errorCode"].as_i64() == Some(1);
            let asked = std::env::var("ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE")
                .is_ok_and(|v| v == "1");
            return if deprecated && asked { 7 } else { 1 };
        }
        Ok(r) if r.status().as_u16() == 409 => {
            say(&format!(
                "{}: A session for this runner already exists.",
                ts()
            ));
            return 5;
        }
        Ok(r) => {
            say(&format!(
                "{}: Failed to create a session: {}",
                ts(),
                r.status()
            ));
            return 2;
        }
        Err(e) => {
            say(&format!("{}: Failed to connect: {e}", ts()));
            return 2;
        }
    };
    let id = Identity {
        session: session_id,
        renew_secs,
        ..id
    };
    if let Some(n) = knob("FAKE_RUNNER_ORPHANS") {
        leave_orphans(n);
    }
    say(&format!("{}: Listening for Jobs", ts()));
    if let Some(code) = take_exit_knob(root) {
        end_session(&client, &id).await;
        if code == 3 || code == 4 {
            let marker = root.join("update.finished");
            let _ = std::process::Command::new("sh")
                .args(["-c", &format!("sleep 1; touch '{}'", marker.display())])
                .stdin(Stdio::null())
                .spawn();
        }
        return code;
    }

    let mut sigint =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).expect("SIGINT");
    let mut sigterm =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM");
    // Waiting for a job.
    let job = loop {
        let poll = client
            .get(format!(
                "{}/_fake/runner/jobs/next?session={}&wait_secs=20",
                id.server, id.session
            ))
            .bearer_auth(&id.secret)
            .send();
        tokio::select! {
            r = poll => match r {
                Ok(r) if r.status().as_u16() == 200 => match r.json::<Value>().await {
                    Ok(j) => break j,
                    Err(e) => say(&format!("{}: bad job message: {e}", ts())),
                },
                Ok(r) if r.status().as_u16() == 204 => continue,
                Ok(r) if r.status().as_u16() == 401 || r.status().as_u16() == 404 => {
                    say(&format!("{}: The runner registration has been deleted from the server.", ts()));
                    remove_identity(root);
                    return 0;
                }
                Ok(r) => {
                    say(&format!("{}: job poll failed: {}", ts(), r.status()));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    say(&format!("{}: job poll failed: {e}", ts()));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
            _ = sigint.recv() => { say("Exiting..."); end_session(&client, &id).await; return 0; }
            _ = sigterm.recv() => { say("Exiting..."); end_session(&client, &id).await; return 0; }
        }
    };

    let job_id = job["id"].as_u64().unwrap_or_default();
    let name = job["name"].as_str().unwrap_or("job").to_string();
    let steps: Vec<String> = job["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let _ = client
        .post(format!("{}/_fake/runner/jobs/{job_id}/start", id.server))
        .bearer_auth(&id.secret)
        .send()
        .await;
    say(&format!("{}: Running job: {name}", ts()));
    // While the job runs no poll is open: renew it, as actions/runner renews its job lock, so
    // that the runner is not taken for gone.
    let renewal = (id.renew_secs > 0).then(|| {
        let (client, url, secret) = (
            client.clone(),
            format!(
                "{}/_fake/runner/jobs/{job_id}/renew?session={}",
                id.server, id.session
            ),
            id.secret.clone(),
        );
        let every = Duration::from_secs(id.renew_secs);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let _ = client.post(&url).bearer_auth(&secret).send().await;
            }
        })
    });
    let work = if Path::new(&id.work).is_absolute() {
        PathBuf::from(&id.work)
    } else {
        root.join(&id.work)
    };
    let _ = std::fs::create_dir_all(&work);
    let mut output = String::new();
    let mut result = "Succeeded";
    for step in &steps {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", step])
            .env_clear()
            .envs(job_env())
            .current_dir(&work)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                output.push_str(&format!("cannot start step: {e}\n"));
                result = "Failed";
                break;
            }
        };
        let pgid = child.id().map(|p| p as i32);
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for r in [
            Box::new(out) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(err),
        ] {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    let _ = tx.send(l);
                }
            });
        }
        drop(tx);
        let status = loop {
            tokio::select! {
                Some(line) = rx.recv() => { say(&line); output.push_str(&line); output.push('\n'); }
                s = child.wait() => {
                    // The readers may still hold the step's last lines: take them until both pipes
                    // close (bounded: a background process may keep a pipe open).
                    let until = tokio::time::Instant::now() + Duration::from_secs(2);
                    while let Ok(Some(line)) = tokio::time::timeout_at(until, rx.recv()).await {
                        say(&line);
                        output.push_str(&line);
                        output.push('\n');
                    }
                    break s.ok();
                }
                _ = sigint.recv() => break None,
                _ = sigterm.recv() => break None,
            }
        };
        match status {
            Some(s) if s.success() => {}
            Some(s) => {
                let line = format!(
                    "##[error]Process completed with exit code {}: {step}",
                    s.code().unwrap_or(-1)
                );
                say(&line);
                output.push_str(&line);
                output.push('\n');
                result = "Failed";
                break;
            }
            None => {
                say("Exiting...");
                if let Some(p) = pgid {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.wait().await;
                result = "Canceled";
                break;
            }
        }
    }
    if let Some(r) = renewal {
        r.abort();
    }
    let _ = client
        .post(format!("{}/_fake/runner/jobs/{job_id}/complete", id.server))
        .bearer_auth(&id.secret)
        .json(&json!({"result": result, "output": output}))
        .send()
        .await;
    say(&format!(
        "{}: Job {name} completed with result: {result}",
        ts()
    ));
    end_session(&client, &id).await;
    if id.ephemeral {
        remove_identity(root);
    }
    0
}

async fn end_session(client: &reqwest::Client, id: &Identity) {
    let _ = client
        .delete(format!(
            "{}/_fake/runner/session?session={}",
            id.server, id.session
        ))
        .bearer_auth(&id.secret)
        .send()
        .await;
}

fn origin(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    Some(
        format!("{}://{}", u.scheme(), u.host_str()?)
            + &u.port().map(|p| format!(":{p}")).unwrap_or_default(),
    )
}

async fn configure(root: &Path, opts: &Opts) -> i32 {
    if root.join(".runner").exists() {
        say(
            "Cannot configure the runner because it is already configured. To reconfigure the runner, run 'config.cmd remove' or './config.sh remove' first.",
        );
        return 1;
    }
    let (Some(url), Some(token)) = (opts.get("url"), opts.get("token")) else {
        say(
            "--url and --token are required (or ACTIONS_RUNNER_INPUT_URL / ACTIONS_RUNNER_INPUT_TOKEN)",
        );
        return 1;
    };
    let Some(server) = origin(url) else {
        say(&format!("Invalid URL: {url}"));
        return 1;
    };
    let labels: Vec<String> = opts
        .get("labels")
        .map(|l| l.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    let body = json!({
        "url": url,
        "token": token,
        "name": opts.get("name").map(String::from).unwrap_or_else(|| nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()),
        "labels": labels,
        "no_default_labels": opts.has("no-default-labels"),
        "runner_group": opts.get("runnergroup"),
        "work_folder": opts.get("work").unwrap_or("_work"),
        "ephemeral": opts.has("ephemeral"),
        "replace": opts.has("replace"),
    });
    let r = http()
        .post(format!("{server}/_fake/runner/config"))
        .json(&body)
        .send()
        .await;
    let triple: Value = match r {
        Ok(r) if r.status().is_success() => match r.json().await {
            Ok(v) => v,
            Err(e) => {
                say(&format!("bad answer: {e}"));
                return 1;
            }
        },
        Ok(r) => {
            let s = r.status();
            say(&format!(
                "Http response code: {s} from 'POST {server}/_fake/runner/config': {}",
                r.text().await.unwrap_or_default()
            ));
            return 1;
        }
        Err(e) => {
            say(&format!("Failed to connect to {server}: {e}"));
            return 1;
        }
    };
    let triple = match triple.get("encoded_jit_config").and_then(Value::as_str) {
        Some(enc) => match B64
            .decode(enc)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(t) => t,
            None => {
                say("bad encoded configuration");
                return 1;
            }
        },
        None => triple,
    };
    if let Err(e) = write_triple(root, &triple) {
        say(&e);
        return 1;
    }
    say("√ Runner successfully added");
    say("√ Runner connection is good");
    say("√ Settings Saved.");
    0
}

async fn remove(root: &Path, opts: &Opts) -> i32 {
    let Ok(id) = read_identity(root) else {
        say("The runner is not configured.");
        return 1;
    };
    let Some(token) = opts.get("token") else {
        say("--token is required");
        return 1;
    };
    let r = http()
        .post(format!("{}/_fake/runner/remove", id.server))
        .bearer_auth(&id.secret)
        .json(&json!({"token": token}))
        .send()
        .await;
    match r {
        Ok(r) if r.status().is_success() => {
            say("√ Runner removed successfully");
            remove_identity(root);
            0
        }
        Ok(r) => {
            say(&format!("Failed to remove the runner: {}", r.status()));
            1
        }
        Err(e) => {
            say(&format!("Failed to connect: {e}"));
            1
        }
    }
}
