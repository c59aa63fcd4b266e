//! `sysrunner-testkit demo`: one whole runner life on this machine, with no GitHub account.
//! Starts the fake GitHub in a network namespace of its own, installs the fake actions/runner, runs
//! `sysrunner run` in the sysbox-like box (or the privileged-like one), queues one job that runs a
//! container on the inner dockerd, and prints each phase with its time and a summary. Everything
//! it makes (box, cgroups, mounts, namespaces, veth, files) is removed when it ends. It never
//! talks to GitHub.
//!
//! It follows the life through the `phase` field of sysrunner's JSON log (`LOG_FORMAT=json`), the
//! contract README's "Logs" paragraph states, never through the words of a message: a lifecycle
//! that says things differently still shows every phase here. The messages are only shown.

use super::BoxKind;
use super::binaries;
use super::exit::Exit;
use super::fake_github::{FakeConfig, JobResult, JobStatus};
use super::gate;
use super::rig::{LINK_MTU, Rig};
use serde_json::Value;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const NAME: &str = "sysrunner-demo";

/// What the demo shows of a phase's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detail {
    /// The line's message.
    Message,
    /// The `code` field (the `exit` phase's).
    Code,
}

/// The phases the demo shows, in a life's order: (the `phase` field, what the demo calls it,
/// what it adds). The others (`start`, `pristine`, `started`, `runner-starting`, `runner-updating`) pass
/// without a line, as they always have.
const PHASES: &[(&str, &str, Detail)] = &[
    ("probe", "probe verdict", Detail::Message),
    ("dockerd-ready", "dockerd ready", Detail::Message),
    ("registered", "registered", Detail::Message),
    ("listening", "listening for jobs", Detail::Message),
    ("busy", "job started", Detail::Message),
    ("job-done", "job done", Detail::Message),
    ("deregistered", "deregistered", Detail::Message),
    ("dockerd-stopped", "dockerd stopped", Detail::Message),
    ("exit", "exit", Detail::Code),
];

/// One line of sysrunner's JSON log, as tracing-subscriber writes it: an object per line whose
/// event fields (`message`, `phase`, `code`, …) are under `fields`, or at the top level when the
/// subscriber flattens them (sysrunner's does today); both are read.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    level: String,
    target: String,
    fields: serde_json::Map<String, Value>,
}

impl Event {
    fn parse(line: &str) -> Option<Event> {
        let Value::Object(mut top) = serde_json::from_str::<Value>(line).ok()? else {
            return None;
        };
        let text = |v: Option<Value>| match v {
            Some(Value::String(s)) => s,
            _ => String::new(),
        };
        let level = text(top.remove("level"));
        let target = text(top.remove("target"));
        top.remove("timestamp");
        let fields = match top.remove("fields") {
            Some(Value::Object(f)) => f,
            _ => top,
        };
        Some(Event {
            level,
            target,
            fields,
        })
    }

    fn field(&self, name: &str) -> Option<String> {
        match self.fields.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            v => Some(v.to_string()),
        }
    }

    fn phase(&self) -> Option<String> {
        self.field("phase")
    }

    fn message(&self) -> String {
        self.field("message").unwrap_or_default()
    }

    /// `INFO sysrunner::lifecycle: message key=value …`, for people.
    fn human(&self) -> String {
        let mut s = format!("{} {}: {}", self.level, self.target, self.message());
        for (k, v) in self.fields.iter().filter(|(k, _)| *k != "message") {
            match v {
                Value::String(t) => s.push_str(&format!(" {k}={t:?}")),
                v => s.push_str(&format!(" {k}={v}")),
            }
        }
        s
    }
}

/// The line the demo prints for `event` when it is one of [`PHASES`] (index, line).
fn shown(event: &Event) -> Option<(usize, String)> {
    let phase = event.phase()?;
    let i = PHASES.iter().position(|(p, _, _)| *p == phase)?;
    let (_, label, detail) = PHASES[i];
    let line = match detail {
        Detail::Code => format!(
            "{label}: {}",
            event.field("code").unwrap_or_else(|| event.message())
        ),
        Detail::Message => {
            let msg = event.message();
            // A message that opens with the label says it already ("dockerd ready in 1.27s");
            // any other is shown after it.
            if msg.is_empty() || msg == label {
                label.to_string()
            } else if msg.starts_with(label) {
                msg
            } else {
                format!("{label}: {msg}")
            }
        }
    };
    Some((i, line))
}

fn refuse_real_github() -> Option<String> {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let scope = ["REPO", "ORG", "ENTERPRISE"].into_iter().find(|k| set(k));
    let creds = [
        "ACCESS_TOKEN",
        "ACCESS_TOKEN_FILE",
        "APP_ID",
        "APP_PRIVATE_KEY",
        "APP_PRIVATE_KEY_FILE",
    ]
    .into_iter()
    .find(|k| set(k));
    match (scope, creds) {
        (Some(s), Some(c)) => Some(format!(
            "{s} and {c} are set: the demo never talks to GitHub. To register a real runner, run `sysrunner run` as a container's entrypoint (compose.sysbox.yml)."
        )),
        _ => None,
    }
}

/// The demo in a box of `kind`, running `sysrunner` (else the one [`binaries::sysrunner`] finds).
pub fn run(kind: BoxKind, sysrunner: Option<PathBuf>) -> Exit {
    if let Some(why) = refuse_real_github() {
        eprintln!("sysrunner-testkit demo: {why}");
        return Exit::Usage;
    }
    let needs = gate::BOX_WITH_DOCKERD;
    let missing: Vec<String> = needs.iter().filter_map(|n| gate::missing(*n)).collect();
    let tools: Vec<&str> = ["ip", "nsenter"]
        .into_iter()
        .filter(|t| which::which(t).is_err())
        .collect();
    if !missing.is_empty() || !tools.is_empty() {
        eprintln!("sysrunner-testkit demo cannot run here:");
        for m in &missing {
            eprintln!("  - {m}");
        }
        for t in &tools {
            eprintln!("  - needs `{t}` (packages iproute2, util-linux)");
        }
        eprintln!(
            "Install what it needs (Debian 12 or later, as root): bash .ci/install-deps, from a source checkout."
        );
        eprintln!("Run it as root: sudo ./target/debug/sysrunner-testkit demo");
        return Exit::Unsupported;
    }
    let sysrunner = match binaries::sysrunner(sysrunner) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sysrunner-testkit demo: {e}");
            return Exit::Internal;
        }
    };
    let t0 = Instant::now();
    let stamp = |t0: Instant| format!("[{:>6.2}s]", t0.elapsed().as_secs_f64());
    println!(
        "{} starting a {} box, the fake GitHub in its own network namespace (link MTU {LINK_MTU}), the fake runner",
        stamp(t0),
        box_name(kind)
    );
    let rig = match Rig::start(kind, FakeConfig::default(), &sysrunner) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sysrunner-testkit demo: {e}");
            return Exit::Failed;
        }
    };
    println!(
        "{} fake GitHub at {}; the box is {}",
        stamp(t0),
        rig.url,
        rig.box_ip()
    );
    let job = rig.queue(
        NAME,
        "demo",
        &[
            "docker import ../busybox.tar demo/busybox >/dev/null",
            "docker run --rm demo/busybox busybox echo 'hello from a container on the runner'\"'\"'s own dockerd'",
            "echo \"container MTU: $(docker run --rm demo/busybox cat /sys/class/net/eth0/mtu)\"",
        ],
    );
    println!("{} queued job {} for runner {NAME}", stamp(t0), job.id);

    let log = rig.b.paths().state.join("sysrunner.log");
    let mut env = rig.settings(NAME);
    env.insert("LOG_LEVEL".into(), "info,dockerd=warn,runner=warn".into());
    env.insert("LOG_FORMAT".into(), "json".into());
    let mut child = match rig.spawn_in_box(&rig.b.sysrunner_in_box(), &["run"], &env, &log) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sysrunner-testkit demo: cannot start sysrunner run: {e}");
            return Exit::Internal;
        }
    };
    println!("{} sysrunner run started", stamp(t0));
    let mut seen = vec![false; PHASES.len()];
    let mut pos = 0u64;
    let mut lines = Vec::new();
    let status = loop {
        // Whether it has exited, asked before reading: a read after the exit sees every line.
        let exited = match child.try_wait() {
            Ok(Some(s)) => Some(Some(s)),
            Ok(None) if t0.elapsed() > Duration::from_secs(300) => {
                let _ = child.kill();
                let _ = child.wait();
                Some(None)
            }
            Ok(None) => None,
            Err(_) => Some(None),
        };
        if let Ok(mut f) = std::fs::File::open(&log)
            && f.seek(SeekFrom::Start(pos)).is_ok()
        {
            let mut reader = BufReader::new(f);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if !line.ends_with('\n') {
                    break;
                }
                pos += line.len() as u64;
                let event = Event::parse(&line);
                if let Some((i, shown)) = event.as_ref().and_then(shown)
                    && !seen[i]
                {
                    println!("{} {shown}", stamp(t0));
                    seen[i] = true;
                }
                // Kept for a failure's report, readable: a JSON line as `LEVEL target: message`.
                lines.push(match event {
                    Some(e) => format!("{}\n", e.human()),
                    None => std::mem::take(&mut line),
                });
                line.clear();
            }
        }
        match exited {
            Some(status) => break status,
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let job = rig.job(job.id);
    let left_at_github = rig.runners().len();
    let left_in_box = rig.pids_left().map(|p| p.len()).unwrap_or(0);
    let code = status.and_then(|s| s.code());
    println!();
    println!("summary");
    println!("  runtime box        {}", box_name(kind));
    println!("  job                {}", job_summary(&job));
    for l in job.output.lines() {
        println!("  job output         {l}");
    }
    println!(
        "  sysrunner exit     {}",
        code.map(|c| c.to_string())
            .unwrap_or_else(|| "none (killed)".into())
    );
    println!("  runners at GitHub  {left_at_github}");
    println!("  processes in box   {left_in_box}");
    println!("  total              {:.1}s", t0.elapsed().as_secs_f64());
    let ok = code == Some(0)
        && job.status == JobStatus::Completed
        && job.result == Some(JobResult::Succeeded)
        && left_at_github == 0;
    if !ok {
        eprintln!("\nthe demo did not go as planned; sysrunner's log:");
        for l in lines
            .iter()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            eprint!("  {l}");
        }
    }
    drop(rig);
    println!("  cleaned up         box, cgroups, mounts, network namespace, veth, fake GitHub");
    if ok { Exit::Ok } else { Exit::Failed }
}

/// `Completed: Succeeded`, `Queued`: the words GitHub shows, not Rust's debug form.
fn job_summary(job: &super::fake_github::Job) -> String {
    let status = format!("{:?}", job.status);
    match job.result {
        Some(r) => format!("{status}: {r:?}"),
        None => status,
    }
}

fn box_name(kind: BoxKind) -> &'static str {
    match kind {
        BoxKind::SysboxLike => "sysbox-like (user namespace)",
        BoxKind::PrivilegedLike => "privileged-like",
    }
}

/// For the CLI: `sysbox` or `privileged`.
pub fn parse_box(s: &str) -> Option<BoxKind> {
    match s {
        "sysbox" => Some(BoxKind::SysboxLike),
        "privileged" => Some(BoxKind::PrivilegedLike),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_names_parse() {
        assert_eq!(parse_box("sysbox"), Some(BoxKind::SysboxLike));
        assert_eq!(parse_box("privileged"), Some(BoxKind::PrivilegedLike));
        assert_eq!(parse_box("docker"), None);
    }

    /// Lines as sysrunner writes them today (fields flattened into the object) and as
    /// tracing-subscriber does by default (under `fields`).
    const FLAT: &str = r#"{"timestamp":"2026-12-02T05:46:07Z","level":"INFO","message":"dockerd ready in 1.27s","phase":"dockerd-ready","target":"sysrunner::lifecycle"}"#;
    const NESTED: &str = r#"{"timestamp":"2026-12-02T05:46:07Z","level":"INFO","fields":{"message":"exit 0","phase":"exit","code":0},"target":"sysrunner::lifecycle"}"#;

    fn line_of(json: &str) -> Option<String> {
        shown(&Event::parse(json)?).map(|(_, l)| l)
    }

    #[test]
    fn phases_are_read_from_the_fields_flattened_or_not() {
        assert_eq!(line_of(FLAT).as_deref(), Some("dockerd ready in 1.27s"));
        assert_eq!(line_of(NESTED).as_deref(), Some("exit: 0"));
    }

    #[test]
    fn a_phase_is_shown_whatever_its_message_says() {
        let reworded = r#"{"level":"INFO","fields":{"message":"the engine answers","phase":"dockerd-ready"},"target":"x"}"#;
        assert_eq!(
            line_of(reworded).as_deref(),
            Some("dockerd ready: the engine answers")
        );
        let silent = r#"{"level":"INFO","phase":"deregistered","runner_id":1,"target":"x"}"#;
        assert_eq!(line_of(silent).as_deref(), Some("deregistered"));
        let exit = r#"{"level":"INFO","message":"bye","phase":"exit","code":75,"target":"x"}"#;
        assert_eq!(line_of(exit).as_deref(), Some("exit: 75"));
    }

    #[test]
    fn lines_without_a_shown_phase_show_nothing() {
        for l in [
            r#"{"level":"INFO","message":"runner listening for jobs soon","target":"x"}"#,
            r#"{"level":"INFO","message":"restored","phase":"pristine","target":"x"}"#,
            "2026-11-28T03:00:24Z  INFO sysrunner::lifecycle: runner listening phase=\"listening\"",
            "not json",
        ] {
            assert_eq!(line_of(l), None, "{l}");
        }
    }

    #[test]
    fn a_failure_report_reads_like_the_text_log() {
        let e = Event::parse(FLAT).unwrap();
        assert_eq!(
            e.human(),
            "INFO sysrunner::lifecycle: dockerd ready in 1.27s phase=\"dockerd-ready\""
        );
    }

    #[test]
    fn phases_are_in_log_order() {
        assert_eq!(PHASES.first().unwrap().1, "probe verdict");
        assert_eq!(PHASES.last().unwrap().1, "exit");
    }

    /// README's "Logs" paragraph is the contract: every phase shown is one it names.
    #[test]
    fn every_phase_shown_is_one_readme_names() {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
        )
        .unwrap();
        let logs = readme
            .split("**Logs.**")
            .nth(1)
            .and_then(|r| r.split("\n\n").next())
            .expect("README has a **Logs.** paragraph");
        for (phase, _, _) in PHASES {
            assert!(logs.contains(&format!("`{phase}`")), "{phase}: {logs}");
        }
    }
}
