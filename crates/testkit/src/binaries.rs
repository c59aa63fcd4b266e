//! Where the binaries are: the kit's own two (`sysrunner-testkit`, `fake-runner-listener`) for a
//! process that links this library (a test of either package, the demo), and `sysrunner` for the
//! demo. Why it looks where it looks is in the crate's doc ("Finding the binaries"). Reads the file
//! system and runs `build-id`; changes nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The kit's binary.
pub const TESTKIT: &str = "sysrunner-testkit";
/// The fake runner's listener, built beside it.
pub const LISTENER: &str = "fake-runner-listener";
/// The product's binary.
pub const SYSRUNNER: &str = "sysrunner";
/// Overrides where [`testkit`] looks.
pub const TESTKIT_ENV: &str = "SYSRUNNER_TESTKIT_BIN";
/// Overrides where the demo looks for `sysrunner` (as its `--sysrunner` does).
pub const SYSRUNNER_ENV: &str = "SYSRUNNER_BIN";
/// The hidden command that prints [`crate::BUILD_ID`].
pub const BUILD_ID_COMMAND: &str = "build-id";

/// What builds the kit's binaries, for messages.
const BUILD_TESTKIT: &str = "`cargo build -p sysrunner-testkit` (or `cargo test` at the workspace root, which builds them before any test runs)";

/// Where a binary named `name` may be for a process running as `exe`: beside it (the binaries of
/// one target directory), then one directory up (a test runs from `target/<profile>/deps/`).
pub fn beside(exe: &Path, name: &str) -> Vec<PathBuf> {
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .collect()
}

/// The `sysrunner-testkit` binary built from the same sources as this library, for boxes and the
/// fake runner. Panics, naming the command that builds it, when there is none or it is stale.
pub fn testkit() -> PathBuf {
    locate_testkit().unwrap_or_else(|why| panic!("{why}"))
}

/// The `fake-runner-listener` built with [`testkit`] (beside it), from the same sources as this
/// library. Panics like [`testkit`].
pub fn listener() -> PathBuf {
    locate_listener().unwrap_or_else(|why| panic!("{why}"))
}

/// [`listener`] as a result.
pub fn locate_listener() -> Result<PathBuf, String> {
    let kit = locate_testkit()?;
    let path = beside(&kit, LISTENER).swap_remove(0);
    if !path.is_file() {
        return Err(format!(
            "{LISTENER} is not built beside {}: build it with {BUILD_TESTKIT}",
            kit.display()
        ));
    }
    same_sources(&path, &build_id_of)?;
    Ok(path)
}

/// [`testkit`] as a result; looked up once per process.
pub fn locate_testkit() -> Result<PathBuf, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let me = std::env::current_exe()
                .map_err(|e| format!("cannot find the running executable: {e}"))?;
            let from_env = std::env::var_os(TESTKIT_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from);
            find_testkit(&me, from_env, &build_id_of)
        })
        .clone()
}

/// The kit's binary for a process running as `me`, `from_env` being `$SYSRUNNER_TESTKIT_BIN`;
/// `build_id` runs a candidate's `build-id` (a parameter, so that tests need not run a binary).
fn find_testkit(
    me: &Path,
    from_env: Option<PathBuf>,
    build_id: &dyn Fn(&Path) -> Result<String, String>,
) -> Result<PathBuf, String> {
    if from_env.is_none() && me.file_name().is_some_and(|n| n == TESTKIT) {
        // The kit itself (the demo): nothing to compare.
        return Ok(me.to_path_buf());
    }
    let (path, looked) = match from_env {
        Some(p) => (
            p.is_file().then(|| p.clone()),
            format!("{} (${TESTKIT_ENV})", p.display()),
        ),
        None => {
            let cands = beside(me, TESTKIT);
            let looked = cands
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            (cands.into_iter().find(|p| p.is_file()), looked)
        }
    };
    let path = path.ok_or_else(|| {
        format!("{TESTKIT} is not built: looked at {looked}; build it with {BUILD_TESTKIT}")
    })?;
    same_sources(&path, build_id)?;
    Ok(path)
}

/// Whether the binary at `path` was built from the kit's sources as this library was.
fn same_sources(
    path: &Path,
    build_id: &dyn Fn(&Path) -> Result<String, String>,
) -> Result<(), String> {
    let id = build_id(path)?;
    if id == crate::BUILD_ID {
        Ok(())
    } else {
        Err(format!(
            "{} was built from other sources than this process's test kit (build id {id:?}, \
             expected {:?}): rebuild it with {BUILD_TESTKIT}",
            path.display(),
            crate::BUILD_ID
        ))
    }
}

/// What `path build-id` prints: empty for a binary too old to know the command. (The listener
/// answers it too, before its refusal to run as root.)
fn build_id_of(path: &Path) -> Result<String, String> {
    let out = Command::new(path)
        .arg(BUILD_ID_COMMAND)
        .env_clear()
        .output()
        .map_err(|e| format!("cannot run {} {BUILD_ID_COMMAND}: {e}", path.display()))?;
    Ok(if out.status.success() {
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    } else {
        String::new()
    })
}

/// The `sysrunner` the demo runs in its box: `given` (`--sysrunner`), else `$SYSRUNNER_BIN`,
/// else the one beside the running executable.
pub fn sysrunner(given: Option<PathBuf>) -> Result<PathBuf, String> {
    let me =
        std::env::current_exe().map_err(|e| format!("cannot find the running executable: {e}"))?;
    find_sysrunner(
        &me,
        given.map(|p| (p, "--sysrunner")).or_else(|| {
            std::env::var_os(SYSRUNNER_ENV)
                .filter(|v| !v.is_empty())
                .map(|p| (PathBuf::from(p), "$SYSRUNNER_BIN"))
        }),
    )
}

fn find_sysrunner(me: &Path, given: Option<(PathBuf, &str)>) -> Result<PathBuf, String> {
    if let Some((p, from)) = given {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{} ({from}) is not a file", p.display()))
        };
    }
    // Beside the kit only, not one directory up: the demo is a program, not a test in deps/.
    let p = beside(me, SYSRUNNER).swap_remove(0);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "no {SYSRUNNER} beside {}: build it with `cargo build` at the workspace root (it \
             builds both binaries), or give its path with --sysrunner PATH or ${SYSRUNNER_ENV}",
            me.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_executable_finds_the_binaries_one_directory_up() {
        let exe = Path::new("/w/target/debug/deps/lifecycle-0123abcd");
        assert_eq!(
            beside(exe, TESTKIT),
            [
                PathBuf::from("/w/target/debug/deps/sysrunner-testkit"),
                PathBuf::from("/w/target/debug/sysrunner-testkit"),
            ]
        );
    }

    fn same(_: &Path) -> Result<String, String> {
        Ok(crate::BUILD_ID.into())
    }

    #[test]
    fn the_kit_is_its_own_binary() {
        let me = Path::new("/nowhere/target/debug/sysrunner-testkit");
        assert_eq!(find_testkit(me, None, &same).unwrap(), me);
    }

    #[test]
    fn a_test_takes_the_kit_from_its_target_directory_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let built = dir.path().join(TESTKIT);
        std::fs::write(&built, "").unwrap();
        let me = dir.path().join("deps/t-1");
        assert_eq!(find_testkit(&me, None, &same).unwrap(), built);
        let other = dir.path().join("other");
        std::fs::write(&other, "").unwrap();
        assert_eq!(
            find_testkit(&me, Some(other.clone()), &same).unwrap(),
            other
        );
    }

    #[test]
    fn a_missing_kit_names_the_command_that_builds_it() {
        let dir = tempfile::tempdir().unwrap();
        let me = dir.path().join("deps/t-1");
        let e = find_testkit(&me, None, &same).unwrap_err();
        assert!(e.contains("`cargo build -p sysrunner-testkit`"), "{e}");
        assert!(
            e.contains(&dir.path().join(TESTKIT).display().to_string()),
            "{e}"
        );
        let e = find_testkit(&me, Some(dir.path().join("elsewhere")), &same).unwrap_err();
        assert!(e.contains(TESTKIT_ENV), "{e}");
    }

    #[test]
    fn a_kit_built_from_other_sources_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TESTKIT), "").unwrap();
        let old = |_: &Path| Ok("0123456789abcdef".to_string());
        let e = find_testkit(&dir.path().join("deps/t-1"), None, &old).unwrap_err();
        assert!(
            e.contains("other sources") && e.contains("cargo build -p"),
            "{e}"
        );
    }

    #[test]
    fn the_demo_takes_the_sysrunner_beside_it_unless_told() {
        let dir = tempfile::tempdir().unwrap();
        let me = dir.path().join(TESTKIT);
        let e = find_sysrunner(&me, None).unwrap_err();
        assert!(
            e.contains("--sysrunner") && e.contains("cargo build"),
            "{e}"
        );
        std::fs::write(dir.path().join(SYSRUNNER), "").unwrap();
        assert_eq!(
            find_sysrunner(&me, None).unwrap(),
            dir.path().join(SYSRUNNER)
        );
        let e = find_sysrunner(&me, Some((dir.path().join("nope"), "--sysrunner"))).unwrap_err();
        assert!(e.contains("nope (--sysrunner) is not a file"), "{e}");
    }
}
