//! `sysrunner-testkit bench`: each phase of a runner's life against its physical limit, measured
//! side by side in one run. Per run, for each box kind, in turn (so that the machine's noise hits
//! every variant alike):
//!
//! - **limit**: a bare dockerd with exactly the daemon.json sysrunner plans for that box
//!   (`sysrunner probe --json`), timed from its spawn to its first `/_ping`, then to its exit
//!   after SIGTERM; once the usual way (dockerd starts its own containerd) and once the fastest
//!   way this machine has (containerd first, its socket awaited, then dockerd handed it, as
//!   sysrunner does), each in a fresh box (a fresh network namespace: what one dockerd leaves
//!   there slows the next one's start);
//! - **sysrunner**: in another fresh box against the fake GitHub, a first and a second life with a
//!   job of `true`, the second in the same box after the first (so in the same network namespace,
//!   as a container restarted in a Kubernetes pod: the harder case, since Docker's `restart:
//!   always` gives a new one) (spawn → listening, → job done, → exit; each phase read from the timestamps of
//!   the `phase` field of sysrunner's JSON log, never from a message's words), then a third life
//!   sent SIGTERM once listening; sysrunner's peak RSS (VmHWM) and the requests the fake GitHub
//!   served in each life;
//! - **concurrency**: K boxes whose sysrunners start at once: each one's time to listening.
//!
//! The limit of a life is max(dockerd ready, registration) + the runner's start to "Listening",
//! the last two read from the same lives' logs (the fake GitHub answers in a millisecond or two,
//! the fake runner starts in a few). Results: a table on stdout, a CSV of every sample, an SVG
//! plot and, with `--markdown`, BENCHMARK.md. It never talks to GitHub.

mod inside;
pub mod pull;
mod report;
pub mod scale;

pub use inside::{COMMAND as INSIDE_COMMAND, command as inside_command, run as run_inside};

use crate::BoxKind;
use crate::binaries;
use crate::docker;
use crate::exit::Exit;
use crate::fake_github::FakeConfig;
use crate::gate;
use crate::rig::Rig;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant, SystemTime};

pub use report::{Sample, Summary};

const NAME: &str = "sysrunner-bench";
const LIFE_LIMIT: Duration = Duration::from_secs(180);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub runs: u32,
    pub k: Vec<usize>,
    pub kinds: Vec<BoxKind>,
    /// Where the CSV and the SVG go.
    pub out: PathBuf,
    /// BENCHMARK.md to write, if any.
    pub markdown: Option<PathBuf>,
    pub sysrunner: Option<PathBuf>,
}

/// `sysrunner-testkit bench`.
pub fn run(opts: &Options) -> Exit {
    let missing: Vec<String> = gate::BOX_WITH_DOCKERD
        .iter()
        .filter_map(|n| gate::missing(*n))
        .collect();
    if !missing.is_empty() {
        eprintln!("sysrunner-testkit bench cannot run here:");
        for m in &missing {
            eprintln!("  - {m}");
        }
        return Exit::Unsupported;
    }
    let sysrunner = match binaries::sysrunner(opts.sysrunner.clone()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sysrunner-testkit bench: {e}");
            return Exit::Internal;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&opts.out) {
        eprintln!("sysrunner-testkit bench: {}: {e}", opts.out.display());
        return Exit::Internal;
    }
    let kit = match Staged::testkit() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("sysrunner-testkit bench: {e}");
            return Exit::Internal;
        }
    };
    let steps = opts.runs as u64 * opts.kinds.len() as u64 * 2
        + opts.kinds.len() as u64 * opts.k.len() as u64;
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut samples = Vec::new();
    let mut failures = Vec::new();
    let begun = Instant::now();
    for run in 1..=opts.runs {
        for &kind in &opts.kinds {
            bar.set_message(format!("run {run}: {} limit", report::kind_name(kind)));
            match limit(kind, &sysrunner, &kit.path, run) {
                Ok(s) => samples.extend(s),
                Err(e) => failures.push(format!("run {run}, {kind:?} limit: {e}")),
            }
            bar.inc(1);
            bar.set_message(format!("run {run}: {} lives", report::kind_name(kind)));
            match lives(kind, &sysrunner, run) {
                Ok(s) => samples.extend(s),
                Err(e) => failures.push(format!("run {run}, {kind:?} lives: {e}")),
            }
            bar.inc(1);
        }
    }
    for &kind in &opts.kinds {
        for &k in &opts.k {
            bar.set_message(format!("{} × {k} at once", report::kind_name(kind)));
            match concurrency(kind, k, &sysrunner) {
                Ok(s) => samples.extend(s),
                Err(e) => failures.push(format!("{kind:?} × {k}: {e}")),
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let binary_size = std::fs::metadata(&sysrunner).map(|m| m.len()).ok();
    let summary = Summary::new(samples, binary_size, begun.elapsed());
    println!("{}", summary.table());
    let written = summary
        .write_csv(&opts.out.join("bench.csv"))
        .and_then(|()| summary.write_svg(&opts.out.join("bench.svg")))
        .and_then(|()| match &opts.markdown {
            Some(md) => summary.write_markdown(md, &opts.out.join("bench.svg"), opts),
            None => Ok(()),
        });
    if let Err(e) = written {
        eprintln!("sysrunner-testkit bench: {e}");
        return Exit::Internal;
    }
    println!(
        "wrote {} and {}",
        opts.out.join("bench.csv").display(),
        opts.out.join("bench.svg").display()
    );
    if failures.is_empty() {
        Exit::Ok
    } else {
        for f in &failures {
            eprintln!("sysrunner-testkit bench: {f}");
        }
        Exit::Failed
    }
}

fn sample(run: u32, kind: BoxKind, metric: &str, value: f64) -> Sample {
    Sample {
        run,
        kind,
        metric: metric.to_string(),
        value,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `sysrunner probe --json` in the box: the dockerd plan sysrunner would start.
fn planned(rig: &Rig) -> Result<Value, String> {
    let out = rig
        .b
        .output(
            rig.b
                .command(rig.b.sysrunner_in_box())
                .env("DOCKER_MTU", "1400")
                .args(["probe", "--json"]),
        )
        .map_err(|e| format!("probe: {e}"))?;
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "probe --json: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    if v["dockerd"].is_null() {
        return Err(format!("probe plans no dockerd here: {v}"));
    }
    Ok(v["dockerd"].clone())
}

/// SIGTERM to `child`'s command (box-exec forwards it), then its exit: how long that took.
fn stop(child: &mut Child) -> Result<Duration, String> {
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .map_err(|e| format!("SIGTERM: {e}"))?;
    match crate::boxes::wait_within(child, Duration::from_secs(30)).map_err(|e| e.to_string())? {
        Some(_) => Ok(t.elapsed()),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err("did not stop within 30 s of SIGTERM".into())
        }
    }
}

/// Empties the box's data root (a fresh one for each dockerd, as each life gets).
fn fresh_data_root(rig: &Rig) -> Result<(), String> {
    rig.b
        .run_shell("rm -rf /var/lib/docker/* /run/docker /run/docker.sock /run/docker.pid")
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A copy of the kit's own binary where every box sees it (a box has its own `/tmp`, and the
/// checkout may be there), for the in-box timer; removed when dropped.
struct Staged {
    dir: PathBuf,
    path: PathBuf,
}

impl Staged {
    fn testkit() -> Result<Staged, String> {
        use std::os::unix::fs::PermissionsExt;
        let kit = binaries::locate_testkit()?;
        let dir = Path::new(crate::boxes::STATE_ROOT).join(format!("bench-{}", std::process::id()));
        let path = dir.join(binaries::TESTKIT);
        let staged = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
            std::fs::copy(&kit, &path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        })();
        let s = Staged { dir, path };
        staged.map_err(|e| format!("copy {} to {}: {e}", kit.display(), s.path.display()))?;
        Ok(s)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The bare dockerd, both ways, each in a fresh box of `kind` (a fresh network namespace: what one
/// dockerd leaves there slows the next one's start), started and timed from inside the box by
/// `bench-dockerd` (see `inside`).
fn limit(kind: BoxKind, sysrunner: &Path, testkit: &Path, run: u32) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for first in [false, true] {
        let rig = Rig::start(kind, FakeConfig::default(), sysrunner)?;
        let plan = planned(&rig)?;
        let containerd = &plan["containerd"];
        if first && containerd.is_null() {
            // No containerd installed: dockerd can only start its own.
            continue;
        }
        let way = if first {
            "containerd first"
        } else {
            "its own containerd"
        };
        let mut daemon = plan["daemon_json"].clone();
        if !first {
            if let Some(o) = daemon.as_object_mut() {
                o.remove("containerd");
            }
        }
        fresh_data_root(&rig)?;
        rig.b
            .write_file("/etc/docker/daemon.json", daemon.to_string())
            .map_err(|e| e.to_string())?;
        // The box's /tmp, which its root may write in either kind of box; `host` is where the
        // host reads it.
        let host = rig.b.paths().tmp.clone();
        let log = host.join("dockerd.log");
        let mut args: Vec<String> = [
            inside::COMMAND,
            "--dockerd",
            docker::DOCKERD,
            "--config",
            "/etc/docker/daemon.json",
            "--socket",
            docker::SOCKET,
        ]
        .map(String::from)
        .to_vec();
        args.extend(["--log".into(), "/tmp/dockerd.log".into()]);
        if first {
            let config = containerd["config"].as_str().unwrap_or_default();
            let config_file = containerd["config_file"].as_str().unwrap_or_default();
            rig.b
                .run_shell(&format!(
                    "mkdir -p $(dirname {config_file}) /var/run/docker/containerd"
                ))
                .map_err(|e| e.to_string())?;
            rig.b
                .write_file(config_file, config)
                .map_err(|e| e.to_string())?;
            for (flag, key) in [
                ("--containerd", "binary"),
                ("--containerd-config", "config_file"),
                ("--containerd-socket", "socket"),
            ] {
                args.extend([
                    flag.to_string(),
                    containerd[key].as_str().unwrap_or_default().to_string(),
                ]);
            }
            args.extend(["--containerd-log".into(), "/tmp/containerd.log".into()]);
        }
        let o = rig
            .b
            .output(
                rig.b
                    .command(testkit)
                    .args(&args)
                    .env("PATH", crate::rig::BOX_PATH),
            )
            .map_err(|e| format!("dockerd ({way}): {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "dockerd ({way}): {}{}",
                String::from_utf8_lossy(&o.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        let timed: inside::Timed =
            serde_json::from_slice(&o.stdout).map_err(|e| format!("{}: {e}", inside::COMMAND))?;
        out.push(sample(
            run,
            kind,
            &format!("limit: dockerd ready ({way})"),
            timed.ready_ms,
        ));
        out.push(sample(
            run,
            kind,
            &format!("limit: dockerd stop ({way})"),
            timed.stop_ms,
        ));
        if let Some(c) = timed.containerd_listening_ms {
            out.push(sample(run, kind, DOCKERD_STEPS[0], c));
            let wall = SystemTime::UNIX_EPOCH
                + Duration::from_nanos(u64::try_from(timed.started_unix_ns).unwrap_or(0));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            for (step, message) in DOCKERD_STEPS[1..].iter().zip(DOCKERD_MESSAGES) {
                if let Some(at) = text.lines().find_map(|l| logrus_time(l, message)) {
                    let after = at.duration_since(wall).unwrap_or_default();
                    out.push(sample(run, kind, step, ms(after)));
                }
            }
        }
    }
    Ok(out)
}

/// Where the limit's dockerd spends its time, from containerd's spawn: containerd's socket, then
/// the times of dockerd's own log lines (its messages, in `DOCKERD_MESSAGES`' order).
pub const DOCKERD_STEPS: [&str; 5] = [
    "limit: containerd listening",
    "limit: dockerd \"Starting up\"",
    "limit: dockerd \"Loading containers: start\"",
    "limit: dockerd \"Loading containers: done\"",
    "limit: dockerd \"API listen\"",
];
const DOCKERD_MESSAGES: [&str; 4] = [
    "msg=\"Starting up\"",
    "msg=\"Loading containers: start.\"",
    "msg=\"Loading containers: done.\"",
    "msg=\"API listen on",
];

/// The time of a line of dockerd's log (logrus: `time="<RFC 3339>" level=… msg="…"`) that
/// carries `message`.
fn logrus_time(line: &str, message: &str) -> Option<SystemTime> {
    if !line.contains(message) {
        return None;
    }
    let ts = line.strip_prefix("time=\"")?.split('"').next()?;
    let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).ok()?;
    let since = Duration::from_nanos(u64::try_from(t.unix_timestamp_nanos()).ok()?);
    Some(SystemTime::UNIX_EPOCH + since)
}

/// A line of sysrunner's JSON log with a `phase` field: the phase and when.
fn phase_of(line: &str) -> Option<(String, SystemTime)> {
    let v: Value = serde_json::from_str(line).ok()?;
    let phase = v
        .get("phase")
        .or_else(|| v.get("fields").and_then(|f| f.get("phase")))?
        .as_str()?
        .to_string();
    let ts = v.get("timestamp")?.as_str()?;
    let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).ok()?;
    let since = Duration::from_nanos(u64::try_from(t.unix_timestamp_nanos()).ok()?);
    Some((phase, SystemTime::UNIX_EPOCH + since))
}

/// Each phase's first time, in ms after `spawned`.
fn phases(log: &str, spawned: SystemTime) -> BTreeMap<String, f64> {
    let mut seen = BTreeMap::new();
    for (phase, at) in log.lines().filter_map(phase_of) {
        let after = at.duration_since(spawned).unwrap_or_default();
        seen.entry(phase).or_insert(ms(after));
    }
    seen
}

/// The `peak_rss_kb` field of the `exit` line: sysrunner's VmHWM as it exits.
fn peak_rss_kb(log: &str) -> Option<u64> {
    log.lines().find_map(|line| {
        let v: Value = serde_json::from_str(line).ok()?;
        let fields = v.get("fields").unwrap_or(&v);
        (fields.get("phase")?.as_str()? == "exit").then_some(())?;
        fields.get("peak_rss_kb")?.as_u64()
    })
}

/// One life of `sysrunner run` in the rig's box: its phases (ms after the spawn), its exit code,
/// its peak RSS (kB, from its exit line), the requests the fake served. `sigterm`: sent once it listens.
struct Life {
    phases: BTreeMap<String, f64>,
    code: Option<i32>,
    peak_kb: u64,
    requests: usize,
    /// SIGTERM → exit.
    stopped: Option<f64>,
    log: String,
}

/// The rig's runner settings, with the JSON log the phases are read from.
fn settings(rig: &Rig, name: &str) -> BTreeMap<String, String> {
    let mut env = rig.settings(name);
    env.insert(
        "LOG_LEVEL".into(),
        "info,dockerd=warn,containerd=warn,runner=warn".into(),
    );
    env.insert("LOG_FORMAT".into(), "json".into());
    env
}

fn life(rig: &Rig, n: u32, job: bool, sigterm: bool) -> Result<Life, String> {
    if job {
        rig.queue(NAME, "true", &["true"]);
    }
    let env = settings(rig, NAME);
    let log = rig.b.paths().state.join(format!("life-{n}.log"));
    let before = rig.requests().len();
    let spawned = SystemTime::now();
    let mut child = rig
        .spawn_in_box(&rig.b.sysrunner_in_box(), &["run"], &env, &log)
        .map_err(|e| format!("spawn sysrunner run: {e}"))?;
    let t0 = Instant::now();
    let mut stopped = None;
    let mut sent = None;
    let status = loop {
        if sigterm && sent.is_none() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text
                .lines()
                .filter_map(phase_of)
                .any(|(p, _)| p == "listening")
            {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                )
                .map_err(|e| format!("SIGTERM: {e}"))?;
                sent = Some(Instant::now());
            }
        }
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if t0.elapsed() > LIFE_LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(e.to_string()),
        }
    };
    if let Some(s) = sent {
        stopped = Some(ms(s.elapsed()));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    Ok(Life {
        phases: phases(&text, spawned),
        code: status.and_then(|s| s.code()),
        peak_kb: peak_rss_kb(&text).unwrap_or(0),
        requests: rig.requests().len() - before,
        stopped,
        log: text,
    })
}

/// A first and a second life with a job, then an idle one stopped by SIGTERM, in one box.
fn lives(kind: BoxKind, sysrunner: &Path, run: u32) -> Result<Vec<Sample>, String> {
    let rig = Rig::start(kind, FakeConfig::default(), sysrunner)?;
    let mut out = Vec::new();
    for (n, which) in [(1, "first life"), (2, "second life")] {
        let l = life(&rig, n, true, false)?;
        if l.code != Some(0) {
            return Err(format!("{which} exited {:?}:\n{}", l.code, tail(&l.log)));
        }
        for (phase, at) in &l.phases {
            out.push(sample(run, kind, &format!("{which}: {phase}"), *at));
        }
        out.push(sample(
            run,
            kind,
            &format!("{which}: peak RSS (MB)"),
            l.peak_kb as f64 / 1024.0,
        ));
        out.push(sample(
            run,
            kind,
            &format!("{which}: requests to GitHub"),
            l.requests as f64,
        ));
    }
    let l = life(&rig, 3, false, true)?;
    let Some(stopped) = l.stopped else {
        return Err(format!("the idle life never listened:\n{}", tail(&l.log)));
    };
    out.push(sample(run, kind, "idle life: SIGTERM to exit", stopped));
    Ok(out)
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// `k` boxes whose sysrunners start at once (no job): each one's time to listening.
fn concurrency(kind: BoxKind, k: usize, sysrunner: &Path) -> Result<Vec<Sample>, String> {
    let rigs = (0..k)
        .map(|_| Rig::start(kind, FakeConfig::default(), sysrunner))
        .collect::<Result<Vec<_>, _>>()?;
    let mut children = Vec::new();
    let spawned = SystemTime::now();
    let t0 = Instant::now();
    for (i, rig) in rigs.iter().enumerate() {
        let env = settings(rig, &format!("{NAME}-{i}"));
        let log = rig.b.paths().state.join("concurrent.log");
        let child = rig
            .spawn_in_box(&rig.b.sysrunner_in_box(), &["run"], &env, &log)
            .map_err(|e| format!("spawn sysrunner run: {e}"))?;
        children.push((child, log));
    }
    let mut listening: Vec<Option<f64>> = vec![None; k];
    while listening.iter().any(Option::is_none) && t0.elapsed() < LIFE_LIMIT {
        for (i, (child, log)) in children.iter_mut().enumerate() {
            if listening[i].is_some() {
                continue;
            }
            let text = std::fs::read_to_string(&*log).unwrap_or_default();
            listening[i] = phases(&text, spawned).get("listening").copied();
            if listening[i].is_none() && matches!(child.try_wait(), Ok(Some(_))) {
                return Err(format!("box {i} exited before listening:\n{}", tail(&text)));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for (child, _) in &mut children {
        let _ = stop(child);
    }
    let mut out = Vec::new();
    for (i, l) in listening.iter().enumerate() {
        let at = l.ok_or_else(|| format!("box {i} never listened"))?;
        out.push(sample(0, kind, &format!("{k} at once: to listening"), at));
    }
    Ok(out)
}
