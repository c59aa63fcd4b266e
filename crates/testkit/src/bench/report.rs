//! The benchmark's numbers: samples, their statistics, and the table, CSV, SVG plot and
//! BENCHMARK.md made from them. Pure but for the writes.

use super::Options;
use crate::BoxKind;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// One measurement: `value` is in ms unless the metric's name says otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub run: u32,
    pub kind: BoxKind,
    pub metric: String,
    pub value: f64,
}

pub fn kind_name(kind: BoxKind) -> &'static str {
    match kind {
        BoxKind::SysboxLike => "sysbox-like",
        BoxKind::PrivilegedLike => "privileged-like",
    }
}

/// min, median, p95, max of a metric's samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub p95: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(values: &[f64]) -> Option<Stats> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        // Nearest rank.
        let p95 = v[((0.95 * n as f64).ceil() as usize).clamp(1, n) - 1];
        Some(Stats {
            n,
            min: v[0],
            median,
            p95,
            max: v[n - 1],
        })
    }
}

/// Every sample of a bench run, and what is read off them.
pub struct Summary {
    pub samples: Vec<Sample>,
    pub binary_size: Option<u64>,
    pub took: Duration,
}

/// The phases of a life on the plot, each from the end of the one before: (from, to, label).
const SEGMENTS: &[(&str, &str, &str)] = &[
    ("", "start", "spawn"),
    ("start", "probe", "probe"),
    ("probe", "started", "dockerd ∥ registration"),
    ("started", "listening", "runner start"),
];

impl Summary {
    pub fn new(samples: Vec<Sample>, binary_size: Option<u64>, took: Duration) -> Summary {
        Summary {
            samples,
            binary_size,
            took,
        }
    }

    pub fn kinds(&self) -> Vec<BoxKind> {
        let mut k: Vec<BoxKind> = Vec::new();
        for s in &self.samples {
            if !k.contains(&s.kind) {
                k.push(s.kind);
            }
        }
        k
    }

    /// Every metric of `kind`, in the order first seen, with its statistics.
    pub fn stats(&self, kind: BoxKind) -> Vec<(String, Stats)> {
        let mut order = Vec::new();
        let mut values: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for s in self.samples.iter().filter(|s| s.kind == kind) {
            if !values.contains_key(s.metric.as_str()) {
                order.push(s.metric.as_str());
            }
            values.entry(&s.metric).or_default().push(s.value);
        }
        order
            .into_iter()
            .filter_map(|m| Stats::of(&values[m]).map(|st| (m.to_string(), st)))
            .collect()
    }

    pub fn median(&self, kind: BoxKind, metric: &str) -> Option<f64> {
        let v: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.kind == kind && s.metric == metric)
            .map(|s| s.value)
            .collect();
        Stats::of(&v).map(|s| s.median)
    }

    /// Median over runs of `to − from` in a life (phases' times after the spawn).
    fn span(&self, kind: BoxKind, life: &str, from: &str, to: &str) -> Option<f64> {
        let at = |run: u32, phase: &str| {
            if phase.is_empty() {
                return Some(0.0);
            }
            let m = format!("{life}: {phase}");
            self.samples
                .iter()
                .find(|s| s.kind == kind && s.run == run && s.metric == m)
                .map(|s| s.value)
        };
        let runs: Vec<u32> = {
            let mut r: Vec<u32> = self
                .samples
                .iter()
                .filter(|s| s.kind == kind && s.metric.starts_with(life))
                .map(|s| s.run)
                .collect();
            r.dedup();
            r
        };
        let v: Vec<f64> = runs
            .into_iter()
            .filter_map(|r| Some(at(r, to)? - at(r, from)?))
            .collect();
        Stats::of(&v).map(|s| s.median)
    }

    /// The limit of a life in a box: max(dockerd ready the fastest way, registration) + the
    /// runner's start, each a median.
    pub fn limit(&self, kind: BoxKind) -> Option<(f64, f64, f64)> {
        let dockerd = self
            .median(kind, "limit: dockerd ready (containerd first)")
            .or_else(|| self.median(kind, "limit: dockerd ready (its own containerd)"))?;
        let registration = self.span(kind, "first life", "probe", "registered")?;
        let runner = self.span(kind, "first life", "runner-starting", "listening")?;
        Some((dockerd, registration, runner))
    }

    /// Per box, the limit's dockerd step by step: each step's median time since containerd's
    /// spawn, and what it took after the step before.
    pub fn dockerd_steps(&self) -> Vec<String> {
        const WHAT: [&str; 5] = [
            "containerd started and listening",
            "dockerd spawned after that, to its first log line (Go's start-up of a ~90 MB binary, its configuration)",
            "to loading containers (storage driver, plugins)",
            "loading containers: the default bridge and its iptables rules, one iptables process each",
            "to the API listening (image service, BuildKit, routers)",
        ];
        let mut out = Vec::new();
        for k in self.kinds() {
            let at: Vec<Option<f64>> = super::DOCKERD_STEPS
                .iter()
                .map(|m| self.median(k, m))
                .collect();
            if at.iter().any(Option::is_none) {
                continue;
            }
            let at: Vec<f64> = at.into_iter().flatten().collect();
            let parts: Vec<String> = at
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let took = t - if i == 0 { 0.0 } else { at[i - 1] };
                    format!("{} +{took:.0} → {t:.0}", WHAT[i])
                })
                .collect();
            out.push(format!("{}: {}", kind_name(k), parts.join("; ")));
        }
        out
    }

    /// Each box's headline: sysrunner's first life to listening against the limit.
    pub fn headline(&self) -> Vec<String> {
        self.kinds()
            .into_iter()
            .filter_map(|k| {
                let (d, r, run) = self.limit(k)?;
                let limit = d.max(r) + run;
                let spawned = self.median(k, "first life: listening")?;
                let ours = self.span(k, "first life", "start", "listening")?;
                Some(format!(
                    "{}: to listening in {ours:.0} ms from its own start, {:.2}× the limit of {limit:.0} ms (dockerd {d:.0} ms the fastest way, registration {r:.0} ms, runner start {run:.0} ms); {spawned:.0} ms from its spawn through the box's exec",
                    kind_name(k),
                    ours / limit
                ))
            })
            .collect()
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        for k in self.kinds() {
            let _ = writeln!(s, "{}", kind_name(k));
            let _ = writeln!(
                s,
                "  {:<52} {:>3} {:>9} {:>9} {:>9} {:>9}",
                "metric (ms unless said)", "n", "min", "median", "p95", "max"
            );
            for (m, st) in self.stats(k) {
                let _ = writeln!(
                    s,
                    "  {m:<52} {:>3} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                    st.n, st.min, st.median, st.p95, st.max
                );
            }
        }
        if let Some(b) = self.binary_size {
            let _ = writeln!(s, "sysrunner binary: {:.1} MB", b as f64 / 1e6);
        }
        for h in self.headline() {
            let _ = writeln!(s, "{h}");
        }
        let _ = write!(s, "bench took {:.0} s", self.took.as_secs_f64());
        s
    }

    pub fn markdown_table(&self) -> String {
        let mut s = String::new();
        for k in self.kinds() {
            let _ = writeln!(s, "\n**{}**\n", kind_name(k));
            let _ = writeln!(
                s,
                "| metric (ms unless said) | n | min | median | p95 | max |\n|---|---|---|---|---|---|"
            );
            for (m, st) in self.stats(k) {
                let _ = writeln!(
                    s,
                    "| {m} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                    st.n, st.min, st.median, st.p95, st.max
                );
            }
        }
        s
    }

    pub fn write_csv(&self, path: &Path) -> Result<(), String> {
        let mut s = String::from("run,box,metric,value\n");
        for x in &self.samples {
            let _ = writeln!(
                s,
                "{},{},\"{}\",{:.3}",
                x.run,
                kind_name(x.kind),
                x.metric.replace('"', "\"\""),
                x.value
            );
        }
        std::fs::write(path, s).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The bars: per box, the limit (dockerd ready the fastest way beside registration, then the
    /// runner's start), dockerd started the usual way, and sysrunner's first and second lives
    /// phase by phase; medians.
    fn bars(&self) -> Vec<(String, Vec<(String, f64)>)> {
        let mut bars = Vec::new();
        for k in self.kinds() {
            let name = kind_name(k);
            if let Some((d, r, run)) = self.limit(k) {
                bars.push((
                    format!("{name}: limit"),
                    vec![
                        ("dockerd ∥ registration".to_string(), d.max(r)),
                        ("runner start".to_string(), run),
                    ],
                ));
            }
            if let Some(d) = self.median(k, "limit: dockerd ready (its own containerd)") {
                bars.push((
                    format!("{name}: dockerd, its own containerd"),
                    vec![("dockerd ∥ registration".to_string(), d)],
                ));
            }
            for life in ["first life", "second life"] {
                let segs: Vec<(String, f64)> = SEGMENTS
                    .iter()
                    .filter_map(|(from, to, label)| {
                        Some((label.to_string(), self.span(k, life, from, to)?.max(0.0)))
                    })
                    .collect();
                if segs.len() == SEGMENTS.len() {
                    bars.push((format!("{name}: sysrunner, {life}"), segs));
                }
            }
        }
        bars
    }

    pub fn write_svg(&self, path: &Path) -> Result<(), String> {
        let bars = self.bars();
        let width = bars
            .iter()
            .map(|(_, s)| s.iter().map(|(_, v)| v).sum::<f64>())
            .fold(100.0, f64::max)
            * 1.1;
        let height = 80 + 40 * bars.len().max(1) as u32;
        let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let root = SVGBackend::new(path, (960, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("time to listening, median (ms)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(300)
            .build_cartesian_2d(0f64..width, 0f64..bars.len().max(1) as f64)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_desc("ms")
            .draw()
            .map_err(|e| err(&e))?;
        let colour = |label: &str| match label {
            "spawn" => RGBColor(210, 210, 210),
            "probe" => RGBColor(150, 150, 150),
            "dockerd ∥ registration" => RGBColor(66, 133, 244),
            _ => RGBColor(52, 168, 83),
        };
        let n = bars.len();
        for (i, (_, segs)) in bars.iter().enumerate() {
            let y = (n - 1 - i) as f64;
            let mut x = 0.0;
            for (label, v) in segs {
                let c = colour(label);
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x, y + 0.2), (x + v, y + 0.8)],
                        c.filled(),
                    )))
                    .map_err(|e| err(&e))?;
                x += v;
            }
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{x:.0}"),
                    (x + width * 0.01, y + 0.65),
                    ("sans-serif", 12),
                )))
                .map_err(|e| err(&e))?;
            // The bar's name, left of the plot, level with the bar.
            let (_, py) = chart.backend_coord(&(0.0, y + 0.65));
            root.draw(&Text::new(bars[i].0.clone(), (12, py), ("sans-serif", 12)))
                .map_err(|e| err(&e))?;
        }
        for (i, label) in ["spawn", "probe", "dockerd ∥ registration", "runner start"]
            .iter()
            .enumerate()
        {
            root.draw(&Rectangle::new(
                [
                    (300 + 160 * i as i32, height as i32 - 18),
                    (312 + 160 * i as i32, height as i32 - 6),
                ],
                colour(label).filled(),
            ))
            .map_err(|e| err(&e))?;
            root.draw(&Text::new(
                label.to_string(),
                (318 + 160 * i as i32, height as i32 - 18),
                ("sans-serif", 12),
            ))
            .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))
    }

    pub fn write_markdown(&self, path: &Path, svg: &Path, opts: &Options) -> Result<(), String> {
        let base = path.parent().unwrap_or(Path::new("."));
        let svg_rel = svg
            .strip_prefix(base)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| svg.to_path_buf());
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Benchmark\n\nGenerated by `sysrunner-testkit bench` (see `crates/testkit/src/bench/mod.rs` for what each number is). Regenerate it with:\n\n```sh\n{}\n```\n",
            regenerate_command(opts)
        );
        let _ = writeln!(s, "## Machine\n\n{}\n", machine());
        let _ = writeln!(s, "## Headline\n");
        for h in self.headline() {
            let _ = writeln!(s, "- {h}");
        }
        if let Some(b) = self.binary_size {
            let _ = writeln!(s, "- sysrunner release binary: {:.1} MB", b as f64 / 1e6);
        }
        let _ = writeln!(
            s,
            "\nThe limit is max(dockerd ready the fastest way this machine has, registration) + the runner's start; medians of {} interleaved runs.\n",
            opts.runs
        );
        let _ = writeln!(s, "![time to listening]({})\n", svg_rel.display());
        let steps = self.dockerd_steps();
        if !steps.is_empty() {
            let _ = writeln!(
                s,
                "## Where the limit's time goes\n\nThe fastest dockerd, from containerd's spawn (medians, ms; dockerd's steps are the times of its own log lines):\n"
            );
            for line in steps {
                let _ = writeln!(s, "- {line}");
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s, "## Every metric\n{}", self.markdown_table());
        // `bench-scale`'s section is its own: kept as it is, at the end.
        if let Ok(old) = std::fs::read_to_string(path)
            && let Some(section) = super::scale::section_of(&old)
        {
            let _ = writeln!(s, "{section}");
        }
        // So is `bench-pull`'s, after it.
        if let Ok(old) = std::fs::read_to_string(path)
            && let Some(section) = super::pull::section_of(&old)
        {
            let _ = writeln!(s, "\n{section}");
        }
        std::fs::write(path, s).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The one command that regenerates BENCHMARK.md with these options.
pub fn regenerate_command(opts: &Options) -> String {
    let k: Vec<String> = opts.k.iter().map(|k| k.to_string()).collect();
    let boxes = match opts.kinds.as_slice() {
        [BoxKind::SysboxLike] => "sysbox",
        [BoxKind::PrivilegedLike] => "privileged",
        _ => "both",
    };
    format!(
        "cargo build --release -p sysrunner --bin sysrunner && cargo build -p sysrunner-testkit && sudo target/debug/sysrunner-testkit bench --sysrunner target/release/sysrunner --runs {} --k {} --box {boxes} --out {} --markdown BENCHMARK.md",
        opts.runs,
        k.join(","),
        opts.out.display()
    )
}

/// CPU, cores, memory, kernel, dockerd.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| format!("{:.1} GB", kb / 1e6))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let dockerd = std::process::Command::new(crate::docker::DOCKERD)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("- {cpu}, {cores} cores, {mem}\n- Linux {kernel}\n- {dockerd}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(run: u32, metric: &str, value: f64) -> Sample {
        Sample {
            run,
            kind: BoxKind::SysboxLike,
            metric: metric.into(),
            value,
        }
    }

    #[test]
    fn stats_are_nearest_rank() {
        let st = Stats::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((st.min, st.median, st.p95, st.max), (1.0, 3.0, 5.0, 5.0));
        let st = Stats::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(st.median, 2.5);
        assert!(Stats::of(&[]).is_none());
    }

    /// `bench --markdown` rewrites the file but keeps `bench-scale`'s section as it is.
    #[test]
    fn the_markdown_keeps_the_scale_section_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("BENCHMARK.md");
        let section = format!(
            "{}\n## sysrunner scale\n\n| a | b |\n{}",
            super::super::scale::START,
            super::super::scale::END
        );
        std::fs::write(&md, format!("# Old\n\nstale\n\n{section}\n")).unwrap();
        let opts = Options {
            runs: 1,
            k: vec![1],
            kinds: vec![BoxKind::SysboxLike],
            out: dir.path().to_path_buf(),
            markdown: Some(md.clone()),
            sysrunner: None,
        };
        let sum = Summary::new(vec![s(1, "first life: start", 4.0)], None, Duration::ZERO);
        sum.write_markdown(&md, &dir.path().join("bench.svg"), &opts)
            .unwrap();
        let text = std::fs::read_to_string(&md).unwrap();
        assert!(text.starts_with("# Benchmark\n"), "{text}");
        assert!(!text.contains("stale"), "{text}");
        assert!(text.ends_with(&format!("\n\n{section}\n")), "{text}");
        // Without one, none is made.
        std::fs::remove_file(&md).unwrap();
        sum.write_markdown(&md, &dir.path().join("bench.svg"), &opts)
            .unwrap();
        assert!(
            !std::fs::read_to_string(&md)
                .unwrap()
                .contains("scale:start")
        );
    }

    /// Each of dockerd's steps is told with what it took after the one before.
    #[test]
    fn dockerd_steps_are_cumulative_with_their_own_share() {
        let at = [60.0, 125.0, 150.0, 350.0, 385.0];
        let v: Vec<Sample> = super::super::DOCKERD_STEPS
            .iter()
            .zip(at)
            .map(|(m, t)| s(1, m, t))
            .collect();
        let steps = Summary::new(v.clone(), None, Duration::ZERO).dockerd_steps();
        assert_eq!(steps.len(), 1, "{steps:?}");
        for part in [
            "+60 → 60",
            "+65 → 125",
            "+25 → 150",
            "+200 → 350",
            "+35 → 385",
        ] {
            assert!(steps[0].contains(part), "{part}: {steps:?}");
        }
        // A step missing (an older dockerd's words): no line rather than a wrong one.
        let partial = Summary::new(v[..4].to_vec(), None, Duration::ZERO).dockerd_steps();
        assert!(partial.is_empty(), "{partial:?}");
    }

    /// The limit takes the slower of dockerd and the registration, then the runner's start.
    #[test]
    fn the_limit_is_the_slower_of_dockerd_and_registration_then_the_runner() {
        let mut v = Vec::new();
        for run in 1..=3 {
            v.push(s(run, "limit: dockerd ready (containerd first)", 300.0));
            v.push(s(run, "first life: start", 4.0));
            v.push(s(run, "first life: probe", 10.0));
            v.push(s(run, "first life: registered", 30.0));
            v.push(s(run, "first life: started", 400.0));
            v.push(s(run, "first life: runner-starting", 400.0));
            v.push(s(run, "first life: listening", 450.0 + run as f64));
        }
        let sum = Summary::new(v, None, Duration::ZERO);
        assert_eq!(sum.limit(BoxKind::SysboxLike), Some((300.0, 20.0, 52.0)));
        let h = sum.headline();
        assert!(h[0].contains("448 ms from its own start"), "{h:?}");
        assert!(h[0].contains("1.27×"), "{h:?}");
        assert!(h[0].contains("452 ms from its spawn"), "{h:?}");
        let bars = sum.bars();
        assert_eq!(
            bars[0].1,
            vec![
                ("dockerd ∥ registration".to_string(), 300.0),
                ("runner start".to_string(), 52.0)
            ]
        );
        assert_eq!(bars[1].0, "sysbox-like: sysrunner, first life");
        assert_eq!(
            bars[1].1.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
            vec![4.0, 6.0, 390.0, 52.0]
        );
    }
}
