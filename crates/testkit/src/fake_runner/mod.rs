//! A fake actions/runner release: a directory laid out like the real one (`config.sh`, `run.sh`,
//! `env.sh`, `bin/Runner.Listener`), made by `sysrunner-testkit fake-runner install DIR` (or
//! [`install`]), that sysrunner drives exactly as the real one. It follows REFERENCE.md section 4
//! and the fake GitHub's runner protocol (`/_fake/runner/…`). It shares no code with sysrunner's
//! parser of runner output: it prints the markers from its own strings. Its listener is the kit's
//! `fake-runner-listener` binary (found by [`crate::binaries::listener`]), which links only
//! [`listener`]: the runner directory, where it is copied, holds no fake GitHub and none of its
//! PATs, which the lifecycle tests would find when they search it for a leaked token.

pub mod listener;

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The version the fake claims to be.
pub const VERSION: &str = "2.336.0";
/// The listener's file name in `bin/`.
pub const LISTENER: &str = "Runner.Listener";

const CONFIG_SH: &str = r#"#!/bin/bash
# Fake actions/runner config.sh: "config.sh remove --token T" removes, anything else configures.
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)"
if [ "${1:-}" = "remove" ]; then
  shift
  exec "$dir/bin/Runner.Listener" remove "$@"
fi
exec "$dir/bin/Runner.Listener" configure "$@"
"#;

const RUN_SH: &str = r#"#!/bin/bash
# Fake actions/runner run.sh: like the real one it hides the listener's exit codes
# (2 restarts after 5 s, everything else ends 0). sysrunner runs bin/Runner.Listener directly.
set -uo pipefail
dir="$(cd "$(dirname "$0")" && pwd)"
while true; do
  "$dir/bin/Runner.Listener" run "$@"
  code=$?
  if [ "$code" -eq 2 ]; then
    sleep 5
    continue
  fi
  exit 0
done
"#;

const ENV_SH: &str = r#"#!/bin/bash
# Fake actions/runner env.sh: records PATH and a few variables for jobs, as the real one does.
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)"
printf '%s\n' "$PATH" > "$dir/.path"
env | grep -E '^(LANG|JAVA_HOME|ANT_HOME|M2_HOME|ANDROID_HOME|GRADLE_HOME|NVM_BIN|NVM_PATH|LD_LIBRARY_PATH|PERL5LIB)=' > "$dir/.env" || true
"#;

/// Writes a fake release into `dir`, with `listener` (a `fake-runner-listener` binary) as
/// `bin/Runner.Listener`.
pub fn install(dir: &Path, listener: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir.join("bin"))?;
    for (name, text) in [
        ("config.sh", CONFIG_SH),
        ("run.sh", RUN_SH),
        ("env.sh", ENV_SH),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, text)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
    }
    let target = dir.join("bin").join(LISTENER);
    let _ = std::fs::remove_file(&target);
    std::fs::copy(listener, &target)?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(dir.join("bin/VERSION"), format!("{VERSION}\n"))?;
    Ok(())
}

/// The shell scripts, for shellcheck.
pub fn scripts() -> [(&'static str, &'static str); 3] {
    [
        ("config.sh", CONFIG_SH),
        ("run.sh", RUN_SH),
        ("env.sh", ENV_SH),
    ]
}
