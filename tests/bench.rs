//! `sysrunner-testkit bench --runs 1 --k 1`, the CI smoke run of the benchmark (BENCHMARK.md is
//! made by the same command with more runs): it measures every variant once in both boxes and
//! writes the table, the CSV, the SVG and the markdown report; and `bench-scale --runs 1 --jobs
//! 1`, the same for `sysrunner scale`'s section. Not timed tests: they assert what was measured
//! and written, never how fast.

use std::process::Command;
use sysrunner_testkit as testkit;

const EXE: &str = env!("CARGO_BIN_EXE_sysrunner");

/// `sysrunner-testkit ARGS --sysrunner EXE --out DIR --markdown DIR/BENCHMARK.md` with a plain
/// PATH, as a person runs it, the markdown file holding `markdown` beforehand (a report it must
/// keep); it must exit 0. The output directory, the markdown's path and the command's stdout.
fn run_bench(
    args: &[&str],
    markdown: Option<&str>,
) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("BENCHMARK.md");
    if let Some(text) = markdown {
        std::fs::write(&md, text).unwrap();
    }
    let out = Command::new(testkit::binaries::testkit())
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .args(args)
        .arg("--sysrunner")
        .arg(EXE)
        .arg("--out")
        .arg(dir.path())
        .arg("--markdown")
        .arg(&md)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    (dir, md, stdout)
}

#[test]
fn the_benchmark_measures_every_variant_once_and_writes_its_reports() {
    if !testkit::require("bench", &testkit::gate::BOX_WITH_DOCKERD) {
        return;
    }
    let _serial = testkit::serial();
    let (dir, md, stdout) = run_bench(&["bench", "--runs", "1", "--k", "1", "--box", "both"], None);

    let csv = std::fs::read_to_string(dir.path().join("bench.csv")).unwrap();
    for kind in ["sysbox-like", "privileged-like"] {
        for metric in [
            "limit: dockerd ready (its own containerd)",
            "limit: dockerd ready (containerd first)",
            "limit: dockerd stop (containerd first)",
            "limit: containerd listening",
            "limit: dockerd \"\"Starting up\"\"",
            "limit: dockerd \"\"Loading containers: done\"\"",
            "limit: dockerd \"\"API listen\"\"",
            "first life: start",
            "first life: probe",
            "first life: registered",
            "first life: dockerd-ready",
            "first life: listening",
            "first life: job-done",
            "first life: exit",
            "first life: peak RSS (MB)",
            "first life: requests to GitHub",
            "second life: listening",
            "idle life: SIGTERM to exit",
            "1 at once: to listening",
        ] {
            let row = csv
                .lines()
                .find(|l| l.contains(&format!(",{kind},\"{metric}\",")))
                .unwrap_or_else(|| panic!("{kind} {metric:?} missing:\n{csv}"));
            let value: f64 = row.rsplit(',').next().unwrap().parse().unwrap();
            assert!(value > 0.0, "{row}");
        }
        assert!(
            stdout.contains(&format!("{kind}: to listening in")),
            "no headline for {kind}:\n{stdout}"
        );
    }
    let svg = std::fs::read_to_string(dir.path().join("bench.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.contains("sysbox-like: sysrunner, first life"), "{svg}");
    let md = std::fs::read_to_string(&md).unwrap();
    for part in [
        "## Machine",
        "## Headline",
        "![time to listening](bench.svg)",
        "| first life: listening |",
        "## Where the limit's time goes",
    ] {
        assert!(md.contains(part), "{part:?} missing:\n{md}");
    }
}

/// `sysrunner-testkit bench-scale --runs 1 --jobs 1`, the CI smoke run of the scale benchmark:
/// the controller warm and from zero with one job, and both limits, each measured once; the CSV
/// and the markdown section written (the rest of the file left alone). Not a timed test.
#[test]
fn the_scale_benchmark_measures_every_variant_once_and_writes_its_reports() {
    // tests/scale.rs's needs: a box with a real dockerd and the runner image.
    if !testkit::require("bench-scale", &testkit::gate::BOX_WITH_DOCKERD) {
        return;
    }
    let _serial = testkit::serial();
    let (dir, md, _) = run_bench(
        &["bench-scale", "--runs", "1", "--jobs", "1"],
        Some("# Benchmark\n\nkept\n"),
    );

    let csv = std::fs::read_to_string(dir.path().join("scale.csv")).unwrap();
    for (variant, metric) in [
        ("warm", "busy_ms"),
        ("warm", "completed_ms"),
        ("warm", "all_busy_ms"),
        ("warm", "acquired_ms"),
        ("zero", "busy_ms"),
        ("zero", "completed_ms"),
        ("zero", "all_busy_ms"),
        ("zero", "acquired_ms"),
        ("zero", "container_started_ms"),
        ("limit-warm", "busy_ms"),
        ("limit-warm", "completed_ms"),
        ("limit-zero", "busy_ms"),
        ("limit-zero", "completed_ms"),
        ("limit-zero", "docker_run_returned_ms"),
        ("limit-zero", "docker_cli_ms"),
        ("limit-zero", "container_started_ms"),
    ] {
        let row = csv
            .lines()
            .find(|l| {
                l.starts_with(&format!("1,{variant},1,")) && l.contains(&format!(",{metric},"))
            })
            .unwrap_or_else(|| panic!("{variant} {metric} missing:\n{csv}"));
        let value: f64 = row.rsplit(',').next().unwrap().parse().unwrap();
        assert!(value > 0.0, "{row}");
    }
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(md.starts_with("# Benchmark\n\nkept\n"), "{md}");
    for part in [
        "<!-- scale:start -->\n## sysrunner scale",
        "bench-scale --sysrunner",
        "DOCKERD=off",
        "| warm | 1 | 1 |",
        "| from zero | 1 | 1 |",
        "| limit for from zero | 1 | 1 |",
        "| limit for warm | 1 | 1 |",
        "<!-- scale:end -->",
    ] {
        assert!(md.contains(part), "{part:?} missing:\n{md}");
    }
}

/// `sysrunner-testkit bench-pull --runs 1`, the CI smoke run of the image cache's benchmark: cold
/// and warm pulls through the cache, the plain registry's limit, the upstream's bytes and the
/// hanging cache, each measured once in both boxes (about 12 s of lives); the CSV and the
/// markdown section written, the rest of the file left alone. Not a timed test.
#[test]
fn the_pull_benchmark_measures_every_variant_once_and_writes_its_section() {
    let mut missing: Vec<String> = testkit::gate::BOX_WITH_DOCKERD
        .iter()
        .filter_map(|n| testkit::gate::missing(*n))
        .collect();
    missing.extend(testkit::registry::missing());
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    match testkit::gate::verdict(&missing, ci) {
        testkit::gate::Verdict::Run => {}
        testkit::gate::Verdict::Skip(why) => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "skipping bench-pull: {why} (CI=true would fail instead)"
            );
            return;
        }
        testkit::gate::Verdict::Fail(why) => panic!("bench-pull cannot run in CI: {why}"),
    }
    let _serial = testkit::serial();
    let (dir, md, _) = run_bench(
        &["bench-pull", "--runs", "1", "--box", "both"],
        Some("# Benchmark\n\nkept\n"),
    );

    let csv = std::fs::read_to_string(dir.path().join("pull.csv")).unwrap();
    use testkit::bench::pull;
    for kind in ["sysbox-like", "privileged-like"] {
        for metric in [
            pull::COLD,
            pull::WARM,
            pull::LIMIT,
            pull::COLD_SPAN,
            pull::WARM_SPAN,
            pull::LIMIT_SPAN,
            pull::COLD_BYTES,
            pull::WARM_BYTES,
            pull::COLD_MANIFESTS,
            pull::WARM_MANIFESTS,
            pull::AT_ONCE[0].1,
            pull::AT_ONCE[1].1,
            pull::LISTEN_NONE,
            pull::LISTEN_CACHE,
            pull::LISTEN_REFUSED,
            pull::LISTEN_HANGING,
            pull::LISTEN_HANGING_SHORT,
        ] {
            let row = csv
                .lines()
                .find(|l| l.starts_with(&format!("1,{kind},\"{metric}\",")))
                .unwrap_or_else(|| panic!("{kind} {metric:?} missing:\n{csv}"));
            let value: f64 = row.rsplit(',').next().unwrap().parse().unwrap();
            // The warm life's upstream bytes and counted manifest GETs are what the cache saves:
            // none.
            if metric == pull::WARM_BYTES || metric == pull::WARM_MANIFESTS {
                assert_eq!(value, 0.0, "{row}");
            } else {
                assert!(value > 0.0, "{row}");
            }
        }
    }
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(md.starts_with("# Benchmark\n\nkept\n"), "{md}");
    for part in [
        "<!-- pull:start -->\n## Image pulls through DOCKER_REGISTRY_CACHE",
        "bench-pull --sysrunner",
        "| cold pull (cache from upstream) |",
        "a hanging cache delays listening by",
        "a refusing cache delays listening by",
        "<!-- pull:end -->",
    ] {
        assert!(md.contains(part), "{part:?} missing:\n{md}");
    }
}
