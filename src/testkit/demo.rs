//! `sysrunner demo`: one whole runner life on this machine, with no GitHub account. Starts the fake
//! GitHub in a network namespace of its own, installs the fake actions/runner, runs `sysrunner run`
//! in the sysbox-like box (or the privileged-like one), queues one job that runs a container on the
//! inner dockerd, and prints each phase with its time and a summary. Everything it makes (box,
//! cgroups, mounts, namespaces, veth, files) is removed when it ends. It never talks to GitHub.

use super::fake_github::{FakeConfig, JobResult, JobStatus};
use super::gate;
use super::rig::{LINK_MTU, Rig};
use super::{BoxKind, fake_runner};
use crate::exit::Exit;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::time::{Duration, Instant};

const NAME: &str = "sysrunner-demo";

/// The phases, as the lifecycle logs them: (what the log says, what the demo shows).
const PHASES: &[(&str, &str)] = &[
    ("sysrunner::lifecycle: runtime ", "probe verdict"),
    ("dockerd ready in", "dockerd ready"),
    ("registered sysrunner-demo", "registered"),
    ("runner listening", "listening for jobs"),
    ("runner busy with", "job started"),
    ("runner job ", "job done"),
    ("deregistered", "deregistered"),
    (
        "already removed the ephemeral runner",
        "deregistered (GitHub removed the ephemeral runner)",
    ),
    ("dockerd stopped in", "dockerd stopped"),
    ("sysrunner::lifecycle: exit ", "exit"),
];

/// What a log line says after a phase's needle, without the structured fields that repeat it.
fn phase_detail<'a>(line: &'a str, needle: &str) -> &'a str {
    let after = line.split(needle).nth(1).unwrap_or("");
    [" runtime=", " state=", " runner_id="]
        .iter()
        .fold(after, |d, f| d.split(f).next().unwrap_or(d))
        .trim()
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

pub fn run(kind: BoxKind) -> Exit {
    if let Some(why) = refuse_real_github() {
        eprintln!("sysrunner demo: {why}");
        return Exit::Usage;
    }
    let needs = gate::BOX_WITH_DOCKERD;
    let missing: Vec<String> = needs.iter().filter_map(|n| gate::missing(*n)).collect();
    let tools: Vec<&str> = ["ip", "nsenter"]
        .into_iter()
        .filter(|t| which::which(t).is_err())
        .collect();
    if !missing.is_empty() || !tools.is_empty() {
        eprintln!("sysrunner demo cannot run here:");
        for m in &missing {
            eprintln!("  - {m}");
        }
        for t in &tools {
            eprintln!("  - needs `{t}` (packages iproute2, util-linux)");
        }
        eprintln!(
            "Install what it needs (Debian 12 or later, as root): bash .ci/install-deps, from a source checkout."
        );
        eprintln!("Run it as root: sudo ./target/debug/sysrunner demo");
        return Exit::Unsupported;
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("sysrunner demo: {e}");
            return Exit::Internal;
        }
    };
    let listener = match fake_runner::listener_binary() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sysrunner demo: {e}");
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
    let rig = match Rig::start(kind, FakeConfig::default(), &exe, &listener) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sysrunner demo: {e}");
            return Exit::TempFail;
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
    let mut child = match rig.spawn_in_box(&rig.b.exe_in_box(), &["run"], &env, &log) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sysrunner demo: cannot start sysrunner run: {e}");
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
                for (i, (needle, what)) in PHASES.iter().enumerate() {
                    if line.contains(needle) && !seen[i] {
                        let detail = phase_detail(&line, needle);
                        println!(
                            "{} {what}{}",
                            stamp(t0),
                            if detail.is_empty() {
                                String::new()
                            } else {
                                format!(": {detail}")
                            }
                        );
                        seen[i] = true;
                    }
                }
                lines.push(std::mem::take(&mut line));
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
    if ok { Exit::Ok } else { Exit::TempFail }
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

    #[test]
    fn phase_details_drop_the_fields_that_repeat_the_sentence() {
        let l = "2026-11-28T03:00:24Z  INFO sysrunner::lifecycle: runner listening state=\"listening\"\n";
        assert_eq!(phase_detail(l, "runner listening"), "");
        let l = "INFO sysrunner::lifecycle: runner job demo completed: Succeeded state=\"done\"\n";
        assert_eq!(phase_detail(l, "runner job "), "demo completed: Succeeded");
        let l =
            "INFO sysrunner::lifecycle: GitHub already removed the ephemeral runner runner_id=1\n";
        assert_eq!(phase_detail(l, "already removed the ephemeral runner"), "");
        let l = "INFO sysrunner::lifecycle: dockerd ready in 1.27s\n";
        assert_eq!(phase_detail(l, "dockerd ready in"), "1.27s");
    }

    #[test]
    fn phases_are_in_log_order() {
        assert_eq!(PHASES.first().unwrap().1, "probe verdict");
        assert_eq!(PHASES.last().unwrap().1, "exit");
    }
}
