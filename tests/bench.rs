//! `sysrunner-testkit bench --runs 1 --k 1`, the CI smoke run of the benchmark (BENCHMARK.md is
//! made by the same command with more runs): it measures every variant once in both boxes and
//! writes the table, the CSV, the SVG and the markdown report. Not a timed test: it asserts what
//! was measured and written, never how fast.

use std::process::Command;
use sysrunner_testkit as testkit;

const EXE: &str = env!("CARGO_BIN_EXE_sysrunner");

#[test]
fn the_benchmark_measures_every_variant_once_and_writes_its_reports() {
    if !testkit::require("bench", &testkit::gate::BOX_WITH_DOCKERD) {
        return;
    }
    let _serial = testkit::serial();
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("BENCHMARK.md");
    let out = Command::new(testkit::binaries::testkit())
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .args(["bench", "--runs", "1", "--k", "1", "--box", "both"])
        .arg("--sysrunner")
        .arg(EXE)
        .arg("--out")
        .arg(dir.path())
        .arg("--markdown")
        .arg(&md)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");

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
