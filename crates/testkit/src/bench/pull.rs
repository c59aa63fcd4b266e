//! `sysrunner-testkit bench-pull`: what `DOCKER_REGISTRY_CACHE` saves a life's `docker pull`,
//! against its limit, in both boxes. One upstream registry holds the test image (four gzipped
//! layers, see [`crate::registry`]); per run, for each box kind in turn (interleaved, so that the
//! machine's noise hits every variant alike), lives of `sysrunner run` whose job times
//! `docker pull` of the image inside the job (the CLI's own start included):
//!
//! - **cold**: through a pull-through cache with fresh storage, which fetches from the upstream;
//! - **warm**: the next life through the same cache, which has the image;
//! - **limit**: through a plain registry at the cache's place that holds the image (a copy of the
//!   upstream's storage, no proxy): the same hop with no cache work, what a pull can cost here;
//! - for each of the three, the blob transfers as the registry served them (its own log lines:
//!   the first blob GET's start to the last one's end), free of dockerd's unpacking and the noise
//!   of a loaded machine;
//! - the bytes of blobs the upstream served during the cold and the warm life (its access log),
//!   and while 2 or 4 plain HTTP clients pull the image at once from a cold cache (runners that
//!   start together with the same job);
//! - **no cache**, **refusing cache** and **hanging cache**: a life without
//!   `DOCKER_REGISTRY_CACHE`, one whose cache refuses connections, and lives whose cache accepts
//!   and never answers, with `DOCKER_REGISTRY_CACHE_TIMEOUT` at its default (2 s)
//!   and at 1s: spawn → listening of each (the JSON log's `phase` field), so the hanging
//!   cache's cost and that the timeout bounds it.
//!
//! Every life has a fresh inner dockerd (`DOCKER_DATA=ephemeral`), so every pull fetches the
//! whole image. Results: a table on stdout, `pull.csv` in `--out`, and with `--markdown` the
//! section between [`START`] and [`END`] of that file (appended when absent; the rest is left
//! alone, and `bench --markdown` keeps it). It never talks to anything outside the namespaces.

use super::report::{Sample, Stats, kind_name};
use super::{phases, sample, settings, tail};
use crate::exit::Exit;
use crate::fake_github::{FakeConfig, JobResult};
use crate::registry::{self, Cache, Hanging, Served, Upstream};
use crate::rig::Rig;
use crate::{BoxKind, binaries, gate};
use indicatif::{ProgressBar, ProgressStyle};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The line that opens the pull section of BENCHMARK.md.
pub const START: &str = "<!-- pull:start -->";
/// The line that closes it.
pub const END: &str = "<!-- pull:end -->";

const NAME: &str = "sysrunner-bench-pull";
const LIFE_LIMIT: Duration = Duration::from_secs(180);
/// Where the plain registry (the limit) and the hanging cache listen beside the cache.
const PLAIN_PORT: u16 = 5001;
const HANGING_PORT: u16 = 5002;
/// Where nothing listens: a cache that refuses connections.
const REFUSED_PORT: u16 = 5003;
/// The job: the pull, timed in the job's shell, in ns.
const PULL: &str = "s=$(date +%s%N); docker pull -q testimg:1 >/dev/null; e=$(date +%s%N); echo pull-ns=$((e - s))";

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub runs: u32,
    pub kinds: Vec<BoxKind>,
    /// Where pull.csv goes.
    pub out: PathBuf,
    /// The markdown file whose pull section is replaced, if any.
    pub markdown: Option<PathBuf>,
    pub sysrunner: Option<PathBuf>,
}

/// The metrics, in the table's order.
pub const COLD: &str = "cold pull (cache from upstream)";
pub const WARM: &str = "warm pull (from the cache)";
pub const LIMIT: &str = "limit: pull from a plain registry at the cache's place";
pub const COLD_SPAN: &str = "cold: the cache's blob transfers, first start to last end";
pub const WARM_SPAN: &str = "warm: the cache's blob transfers, first start to last end";
pub const LIMIT_SPAN: &str = "limit: the plain registry's blob transfers, first start to last end";
pub const COLD_MANIFESTS: &str = "upstream manifest GETs, cold life";
pub const WARM_MANIFESTS: &str = "upstream manifest GETs, warm life";
pub const COLD_BYTES: &str = "upstream blob bytes, cold life (MB)";
pub const WARM_BYTES: &str = "upstream blob bytes, warm life (MB)";
/// K clients pulling the image at once from a cold cache: the upstream's blob bytes, in images.
pub const AT_ONCE: [(usize, &str); 2] = [
    (
        2,
        "cold cache, 2 clients at once: upstream blob bytes (× the image)",
    ),
    (
        4,
        "cold cache, 4 clients at once: upstream blob bytes (× the image)",
    ),
];
pub const LISTEN_NONE: &str = "no cache: spawn to listening";
pub const LISTEN_CACHE: &str = "warm cache: spawn to listening";
pub const LISTEN_REFUSED: &str = "refusing cache: spawn to listening";
pub const LISTEN_HANGING: &str = "hanging cache: spawn to listening";
pub const LISTEN_HANGING_SHORT: &str =
    "hanging cache, DOCKER_REGISTRY_CACHE_TIMEOUT=1s: spawn to listening";
const METRICS: [&str; 17] = [
    COLD,
    WARM,
    LIMIT,
    COLD_SPAN,
    WARM_SPAN,
    LIMIT_SPAN,
    COLD_BYTES,
    WARM_BYTES,
    COLD_MANIFESTS,
    WARM_MANIFESTS,
    AT_ONCE[0].1,
    AT_ONCE[1].1,
    LISTEN_NONE,
    LISTEN_CACHE,
    LISTEN_REFUSED,
    LISTEN_HANGING,
    LISTEN_HANGING_SHORT,
];

/// `sysrunner-testkit bench-pull`.
pub fn run(opts: &Options) -> Exit {
    let mut missing: Vec<String> = gate::BOX_WITH_DOCKERD
        .iter()
        .filter_map(|n| gate::missing(*n))
        .collect();
    missing.extend(registry::missing());
    if !missing.is_empty() {
        eprintln!("sysrunner-testkit bench-pull cannot run here:");
        for m in &missing {
            eprintln!("  - {m}");
        }
        return Exit::Unsupported;
    }
    let sysrunner = match binaries::sysrunner(opts.sysrunner.clone()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sysrunner-testkit bench-pull: {e}");
            return Exit::Internal;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&opts.out) {
        eprintln!("sysrunner-testkit bench-pull: {}: {e}", opts.out.display());
        return Exit::Internal;
    }
    match measure(opts, &sysrunner) {
        Ok((samples, image_bytes)) => {
            println!("{}", table(&samples, image_bytes));
            let csv = opts.out.join("pull.csv");
            let written = write_csv(&samples, &csv).and_then(|()| match &opts.markdown {
                Some(md) => write_markdown(&samples, image_bytes, md, opts),
                None => Ok(()),
            });
            if let Err(e) = written {
                eprintln!("sysrunner-testkit bench-pull: {e}");
                return Exit::Internal;
            }
            println!("wrote {}", csv.display());
            Exit::Ok
        }
        Err(e) => {
            eprintln!("sysrunner-testkit bench-pull: {e}");
            Exit::Failed
        }
    }
}

/// A box of one kind, its fake's namespace, and the plain registry there.
struct Place {
    kind: BoxKind,
    rig: Rig,
    netns: PathBuf,
    ip: std::net::Ipv4Addr,
    plain: Cache,
    lives: u32,
}

/// One life with `cache` (if any) and a job of `steps` (a life ends after its one job): spawn →
/// listening (ms) and the job's output.
fn life(p: &mut Place, cache: Option<&str>, steps: &[&str]) -> Result<(f64, String), String> {
    life_with(p, cache, None, steps)
}

/// [`life`] with `DOCKER_REGISTRY_CACHE_TIMEOUT` set to `timeout`, if given.
fn life_with(
    p: &mut Place,
    cache: Option<&str>,
    timeout: Option<&str>,
    steps: &[&str],
) -> Result<(f64, String), String> {
    let mut env = settings(&p.rig, NAME);
    if let Some(c) = cache {
        env.insert("DOCKER_REGISTRY_CACHE".into(), c.into());
    }
    if let Some(t) = timeout {
        env.insert("DOCKER_REGISTRY_CACHE_TIMEOUT".into(), t.into());
    }
    let job = p.rig.queue(NAME, "pull", steps);
    p.lives += 1;
    let log = p
        .rig
        .b
        .paths()
        .state
        .join(format!("pull-life-{}.log", p.lives));
    let spawned = SystemTime::now();
    let (code, text) = p
        .rig
        .life(&p.rig.b.sysrunner_in_box(), &env, &log, LIFE_LIMIT);
    if code != Some(0) {
        return Err(format!("a life exited {code:?}:\n{}", tail(&text)));
    }
    let listening = *phases(&text, spawned)
        .get("listening")
        .ok_or_else(|| format!("a life never listened:\n{}", tail(&text)))?;
    let job = p.rig.job(job.id);
    if job.result != Some(JobResult::Succeeded) {
        return Err(format!("the job failed:\n{}\n{}", job.output, tail(&text)));
    }
    Ok((listening, job.output))
}

/// A life that pulls: its pull's time (ms) and spawn → listening.
fn pull(p: &mut Place, cache: &str) -> Result<(f64, f64), String> {
    let (listening, output) = life(p, Some(cache), &[PULL])?;
    let ns: f64 = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("pull-ns="))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("no pull-ns= in the job's output:\n{output}"))?;
    Ok((ns / 1e6, listening))
}

/// `k` clients (plain HTTP, as dockerd pulls: the manifest, then every blob at once) pull the
/// image at the same moment from a cache with fresh storage, in the box's fake's namespace: the
/// blob bytes the upstream served, in images. Each blob the cache lacks is fetched for each client
/// that asks before it is stored.
fn at_once(up: &Upstream, p: &Place, k: usize) -> Result<f64, String> {
    let cache = Cache::start(up, &p.netns, p.ip)?;
    let ns = crate::boxes::network::Netns::enter(&p.netns).map_err(|e| e.to_string())?;
    let (addr, image) = (cache.addr(), up.image().clone());
    let before = up.served();
    ns.run(async move {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..k {
            set.spawn(registry::pull_blobs(addr, image.clone()));
        }
        while let Some(r) = set.join_next().await {
            r.map_err(|e| e.to_string())??;
        }
        Ok::<(), String>(())
    })?;
    let served = up.served() - before;
    Ok(served.blob_bytes as f64 / up.image().size() as f64)
}

fn span(ms: Option<f64>, at: &str) -> Result<f64, String> {
    ms.ok_or_else(|| format!("{at} logged no blob transfer for a pull"))
}

fn mb(s: Served) -> f64 {
    s.blob_bytes as f64 / 1e6
}

fn measure(opts: &Options, sysrunner: &Path) -> Result<(Vec<Sample>, u64), String> {
    let up = Upstream::start()?;
    let image_bytes = up.image().size();
    let mut places = Vec::new();
    for &kind in &opts.kinds {
        let rig = Rig::start(kind, FakeConfig::default(), sysrunner)?;
        let (netns, ip) = registry::github_netns(&rig)?;
        let plain = Cache::plain(&up, &netns, ip, PLAIN_PORT)?;
        places.push(Place {
            kind,
            rig,
            netns,
            ip,
            plain,
            lives: 0,
        });
    }
    let bar = ProgressBar::new(opts.runs as u64 * places.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut out = Vec::new();
    for run in 1..=opts.runs {
        for p in &mut places {
            let kind = p.kind;
            bar.set_message(format!("run {run}: {}", kind_name(kind)));
            let s = |m: &str, v: f64| sample(run, kind, m, v);
            let cache = Cache::start(&up, &p.netns, p.ip)?;
            let (before, mark) = (up.served(), cache.mark());
            let (cold, _) = pull(p, cache.url())?;
            let cold_served = up.served() - before;
            let cold_span = span(cache.blob_span_ms(mark), "the cache, cold")?;
            let (before, mark) = (up.served(), cache.mark());
            let (warm, warm_listening) = pull(p, cache.url())?;
            let warm_served = up.served() - before;
            let warm_span = span(cache.blob_span_ms(mark), "the cache, warm")?;
            drop(cache);
            let plain = p.plain.url().to_string();
            let mark = p.plain.mark();
            let (limit, _) = pull(p, &plain)?;
            let limit_span = span(p.plain.blob_span_ms(mark), "the plain registry")?;
            let (none, _) = life(p, None, &["true"])?;
            let refused = format!("http://{}:{REFUSED_PORT}", p.ip);
            let (refusing, _) = life(p, Some(&refused), &["true"])?;
            let hanging = Hanging::start(&p.netns, SocketAddr::from((p.ip, HANGING_PORT)))?;
            let (hung, _) = life(p, Some(&hanging.url), &["true"])?;
            let (hung_short, _) = life_with(p, Some(&hanging.url), Some("1s"), &["true"])?;
            drop(hanging);
            for (k, metric) in AT_ONCE {
                out.push(s(metric, at_once(&up, p, k)?));
            }
            out.extend([
                s(COLD, cold),
                s(WARM, warm),
                s(LIMIT, limit),
                s(COLD_SPAN, cold_span),
                s(WARM_SPAN, warm_span),
                s(LIMIT_SPAN, limit_span),
                s(COLD_BYTES, mb(cold_served)),
                s(WARM_BYTES, mb(warm_served)),
                s(COLD_MANIFESTS, cold_served.manifest_gets as f64),
                s(WARM_MANIFESTS, warm_served.manifest_gets as f64),
                s(LISTEN_NONE, none),
                s(LISTEN_CACHE, warm_listening),
                s(LISTEN_REFUSED, refusing),
                s(LISTEN_HANGING, hung),
                s(LISTEN_HANGING_SHORT, hung_short),
            ]);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok((out, image_bytes))
}

fn stats(samples: &[Sample], kind: BoxKind, metric: &str) -> Option<Stats> {
    let v: Vec<f64> = samples
        .iter()
        .filter(|s| s.kind == kind && s.metric == metric)
        .map(|s| s.value)
        .collect();
    Stats::of(&v)
}

fn kinds(samples: &[Sample]) -> Vec<BoxKind> {
    let mut k: Vec<BoxKind> = Vec::new();
    for s in samples {
        if !k.contains(&s.kind) {
            k.push(s.kind);
        }
    }
    k
}

/// Every metric's median (min–max) per box kind, ms unless the name says otherwise; the image's
/// size and the hanging cache's delay after.
pub fn table(samples: &[Sample], image_bytes: u64) -> String {
    let mut t = String::new();
    let ks = kinds(samples);
    let _ = write!(t, "| metric |");
    for k in &ks {
        let _ = write!(t, " {} median (min–max) |", kind_name(*k));
    }
    let _ = write!(t, "\n|---|");
    for _ in &ks {
        let _ = write!(t, "---|");
    }
    t.push('\n');
    for m in METRICS {
        let _ = write!(t, "| {m} |");
        for k in &ks {
            match stats(samples, *k, m) {
                Some(s) => {
                    let _ = write!(t, " {:.1} ({:.1}–{:.1}) |", s.median, s.min, s.max);
                }
                None => t.push_str(" - |"),
            }
        }
        t.push('\n');
    }
    let _ = writeln!(
        t,
        "\nThe image: {:.2} MB of blobs (4 gzipped layers, its config, its manifest).",
        image_bytes as f64 / 1e6
    );
    for k in &ks {
        if let (Some(c), Some(w)) = (
            stats(samples, *k, COLD_BYTES),
            stats(samples, *k, WARM_BYTES),
        ) {
            let _ = writeln!(
                t,
                "- {}: the cold life cost the upstream {:.1}× the image's blobs (distribution 2.8's proxy fetches a blob it lacks twice: once streamed to the client, once stored, `copyContent` and `storeLocal` in `registry/proxy/proxyblobstore.go`); the warm life {:.1} MB",
                kind_name(*k),
                c.median * 1e6 / image_bytes as f64,
                w.median
            );
        }
    }
    for k in &ks {
        let Some(n) = stats(samples, *k, LISTEN_NONE) else {
            continue;
        };
        for (metric, what) in [
            (LISTEN_REFUSED, "a refusing cache"),
            (LISTEN_HANGING, "a hanging cache"),
            (LISTEN_HANGING_SHORT, "a hanging cache with a 1 s timeout"),
        ] {
            if let Some(h) = stats(samples, *k, metric) {
                let _ = writeln!(
                    t,
                    "- {}: {what} delays listening by {:.0} ms (median {:.0} against {:.0} without a cache)",
                    kind_name(*k),
                    h.median - n.median,
                    h.median,
                    n.median
                );
            }
        }
    }
    t
}

fn write_csv(samples: &[Sample], path: &Path) -> Result<(), String> {
    let mut s = String::from("run,box,metric,value\n");
    for x in samples {
        let _ = writeln!(
            s,
            "{},{},\"{}\",{:.3}",
            x.run,
            kind_name(x.kind),
            x.metric,
            x.value
        );
    }
    std::fs::write(path, s).map_err(|e| format!("{}: {e}", path.display()))
}

/// The one command that regenerates the section with these options.
pub fn regenerate_command(opts: &Options) -> String {
    let boxes = match opts.kinds.as_slice() {
        [BoxKind::SysboxLike] => "sysbox",
        [BoxKind::PrivilegedLike] => "privileged",
        _ => "both",
    };
    format!(
        "cargo build --release -p sysrunner --bin sysrunner && cargo build -p sysrunner-testkit && sudo target/debug/sysrunner-testkit bench-pull --sysrunner target/release/sysrunner --runs {} --box {boxes} --out {} --markdown BENCHMARK.md",
        opts.runs,
        opts.out.display()
    )
}

/// The section, from [`START`] through [`END`] (no newline after it).
pub fn section(samples: &[Sample], image_bytes: u64, opts: &Options) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{START}\n## Image pulls through DOCKER_REGISTRY_CACHE\n");
    let _ = writeln!(
        s,
        "Generated by `sysrunner-testkit bench-pull` (see `crates/testkit/src/bench/pull.rs` for what each number is); it rewrites this section only. Regenerate it with:\n\n```sh\n{}\n```\n",
        regenerate_command(opts)
    );
    let _ = writeln!(
        s,
        "An upstream registry (Debian's docker-registry 2.8.2) holds a test image; a second one in proxy mode is the cache, where the fake GitHub is (the boxes' default route); the upstream is reachable only from the cache. Each life's job runs `docker pull testimg:1` with a fresh inner dockerd (a Docker Hub short name: dockerd asks its mirror) and times it in the job's shell, the docker CLI's start included. **cold**: the cache's storage is fresh, so it fetches from the upstream; **warm**: the next life, same cache; **limit**: a plain registry at the cache's place holding the image (no proxy work). The blob transfers: from the registry's own log lines (each blob GET's end and duration), the first one's start to the last one's end, which leaves out dockerd's unpacking and the noise of a loaded machine. Bytes and manifest GETs (what Docker Hub's pull rate limit counts; a HEAD does not count): what the upstream's access log shows for that life; **clients at once**: 2 or 4 plain HTTP clients pull the image from a fresh cache at the same moment, as dockerd does (the manifest, then every blob at once), as runners that start together with the same job image would. Spawn to listening from sysrunner's JSON log; the refusing cache is a port nothing listens on, the hanging cache accepts connections and never answers, with `DOCKER_REGISTRY_CACHE_TIMEOUT` at its default (2 s), and at 1s. Medians of {} interleaved runs (min–max), ms unless said.\n",
        opts.runs
    );
    let _ = writeln!(s, "{}", table(samples, image_bytes));
    let _ = write!(s, "{END}");
    s
}

/// `text`'s pull section, [`START`] through [`END`], if it has one.
pub fn section_of(text: &str) -> Option<&str> {
    let a = text.find(START)?;
    let b = a + text[a..].find(END)? + END.len();
    Some(&text[a..b])
}

/// `text` with its pull section replaced by `section`, or with `section` appended at its end.
pub fn splice(text: &str, section: &str) -> String {
    match section_of(text) {
        Some(old) => {
            let a = text.find(old).expect("found just now");
            format!("{}{section}{}", &text[..a], &text[a + old.len()..])
        }
        None if text.trim().is_empty() => format!("{section}\n"),
        None => format!("{}\n\n{section}\n", text.trim_end()),
    }
}

fn write_markdown(
    samples: &[Sample],
    image_bytes: u64,
    path: &Path,
    opts: &Options,
) -> Result<(), String> {
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let new = splice(&old, &section(samples, image_bytes, opts));
    std::fs::write(path, new).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_replaced_in_place_or_appended() {
        let text = format!("# B\n\n{START}\nold\n{END}\n\nafter\n");
        assert_eq!(splice(&text, "NEW"), "# B\n\nNEW\n\nafter\n");
        assert_eq!(splice("# B\n", "NEW"), "# B\n\nNEW\n");
        assert_eq!(splice("", "NEW"), "NEW\n");
        assert_eq!(section_of(&format!("{START}\nno end")), None);
    }

    #[test]
    fn the_table_has_every_metric_and_each_failing_cache_delay() {
        let samples: Vec<Sample> = METRICS
            .iter()
            .map(|m| {
                let v = match *m {
                    LISTEN_NONE => 400.0,
                    LISTEN_REFUSED => 410.0,
                    LISTEN_HANGING => 2050.0,
                    _ => 100.0,
                };
                sample(1, BoxKind::SysboxLike, m, v)
            })
            .collect();
        let t = table(&samples, 4_200_000);
        for m in METRICS {
            assert!(t.contains(m), "{t}");
        }
        assert!(t.contains("4.20 MB"), "{t}");
        assert!(
            t.contains("sysbox-like: a hanging cache delays listening by 1650 ms"),
            "{t}"
        );
        assert!(
            t.contains("sysbox-like: a refusing cache delays listening by 10 ms"),
            "{t}"
        );
    }
}
