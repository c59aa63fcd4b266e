//! The `sysrunner-testkit` binary as a person and a test run it: its commands, the build id tests
//! compare, and the listener a release made by `fake-runner install` runs.
//! (The fake GitHub's own command is in fake_github.rs, the demo in sysrunner's tests/demo.rs.)

use std::path::Path;
use std::process::{Command, Output};
use sysrunner_testkit::fake_runner;

const KIT: &str = env!("CARGO_BIN_EXE_sysrunner-testkit");
const LISTENER: &str = env!("CARGO_BIN_EXE_fake-runner-listener");

fn kit(args: &[&str]) -> Output {
    Command::new(KIT)
        .env_clear()
        .args(args)
        .output()
        .expect("sysrunner-testkit runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_lists_the_commands_a_person_runs_and_hides_the_internal_ones() {
    let o = kit(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = text(&o.stdout);
    for cmd in ["demo", "fake-github", "fake-runner"] {
        assert!(help.contains(cmd), "{cmd:?} missing from\n{help}");
    }
    for hidden in ["box-init", "box-exec", "build-id"] {
        assert!(!help.contains(hidden), "{hidden:?} shown in\n{help}");
    }
    let demo = text(&kit(&["demo", "--help"]).stdout);
    assert!(
        demo.contains("--sysrunner") && demo.contains("SYSRUNNER_BIN"),
        "{demo}"
    );
}

#[test]
fn a_bad_command_line_exits_64() {
    assert_eq!(kit(&[]).status.code(), Some(64));
    assert_eq!(kit(&["frobnicate"]).status.code(), Some(64));
    assert_eq!(kit(&["demo", "--box", "docker"]).status.code(), Some(64));
}

/// What a test compares to tell a stale binary from the one built with its library.
#[test]
fn the_binaries_say_the_build_id_of_the_library_built_with_them() {
    for bin in [KIT, LISTENER] {
        let o = Command::new(bin)
            .env_clear()
            .arg("build-id")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{bin}");
        assert_eq!(text(&o.stdout).trim(), sysrunner_testkit::BUILD_ID, "{bin}");
    }
    if std::env::var_os(sysrunner_testkit::binaries::TESTKIT_ENV).is_none() {
        assert_eq!(
            sysrunner_testkit::binaries::locate_testkit(),
            Ok(Path::new(KIT).to_path_buf()),
            "a test of this package finds the binary cargo built for it"
        );
        assert_eq!(
            sysrunner_testkit::binaries::locate_listener(),
            Ok(Path::new(LISTENER).to_path_buf())
        );
    }
}

#[test]
fn an_installed_fake_runner_runs_the_kits_listener() {
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("runner");
    let o = Command::new(KIT)
        .env_clear()
        .arg("fake-runner")
        .arg("install")
        .arg(&release)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains(fake_runner::VERSION));
    for f in [
        "config.sh",
        "run.sh",
        "env.sh",
        "bin/Runner.Listener",
        "bin/VERSION",
    ] {
        assert!(release.join(f).is_file(), "{f} missing");
    }
    // As root the listener refuses to run unless told, as the real one does.
    let o = Command::new(release.join("bin/Runner.Listener"))
        .env_clear()
        .env("RUNNER_ALLOW_RUNASROOT", "1")
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim(), fake_runner::VERSION);
}
