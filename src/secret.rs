//! Secret values: a token, a private key, a JIT config. Owns redaction, nothing else: a `Secret`
//! prints as `[redacted]` in `Debug` and `Display`, so a secret in a struct that gets logged stays
//! out of the log; reading it takes an explicit `expose()`.

use secrecy::{ExposeSecret, SecretString};
use std::fmt;

#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    /// The value itself. Call sites are the places a secret leaves the process: an HTTP header, a
    /// pipe to a child, a JWT signature.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Variables that hold secrets in sysrunner's own environment (the `*_FILE` forms hold paths).
pub const ENV_SECRETS: [&str; 3] = [
    "ACCESS_TOKEN",
    "APP_PRIVATE_KEY",
    "ACTIONS_RUNNER_INPUT_JITCONFIG",
];

/// Names the pipe a re-executed sysrunner reads its secrets from.
pub const HANDOFF_FD_VAR: &str = "SYSRUNNER_SECRETS_FD";

/// `/proc/PID/environ` keeps the environment a process was started with, whatever it unsets
/// later. So when secrets arrive in the environment, sysrunner executes itself again with an
/// environment without them and hands them over a pipe; afterwards no process's environment or
/// argv holds them, its own included. Returns only if there is nothing to hand off (or the
/// re-exec failed, which is logged by the caller as a weaker guarantee).
pub fn reexec_without_env_secrets() -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(HANDOFF_FD_VAR).is_some() {
        return Ok(());
    }
    let secrets: std::collections::BTreeMap<&str, String> = ENV_SECRETS
        .iter()
        .filter_map(|k| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| (*k, v))
        })
        .collect();
    if secrets.is_empty() {
        return Ok(());
    }
    let (read, write) = nix::unistd::pipe().map_err(std::io::Error::from)?;
    let payload = serde_json::to_vec(&secrets).map_err(std::io::Error::other)?;
    // A pipe holds 64 KiB; a token, a key and a JIT config are a few KiB.
    let mut w = std::fs::File::from(write);
    std::io::Write::write_all(&mut w, &payload)?;
    drop(w);
    let fd = std::os::fd::IntoRawFd::into_raw_fd(read);
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.args(std::env::args_os().skip(1)).arg0(
        std::env::args_os()
            .next()
            .unwrap_or_else(|| "sysrunner".into()),
    );
    for k in ENV_SECRETS {
        cmd.env_remove(k);
    }
    cmd.env(HANDOFF_FD_VAR, fd.to_string());
    // exec only returns on failure. The read end is inherited: pipe() made it without CLOEXEC.
    Err(cmd.exec())
}

/// In the re-executed sysrunner: the secrets handed over, read once; the pipe is closed after.
pub fn take_handed_off() -> std::collections::BTreeMap<String, String> {
    use std::os::fd::FromRawFd;
    let Some(fd) = std::env::var(HANDOFF_FD_VAR)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return Default::default();
    };
    // SAFETY: the fd was created for us by the previous image of this process and is used once.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut buf = Vec::new();
    if std::io::Read::read_to_end(&mut f, &mut buf).is_err() {
        return Default::default();
    }
    serde_json::from_slice(&buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_redacts_in_debug_and_display() {
        let s = Secret::new("ghp_supersecret");
        assert!(!format!("{s:?}").contains("supersecret"));
        assert!(!format!("{s}").contains("supersecret"));
        assert!(!format!("{:?}", Some(&s)).contains("supersecret"));
        assert_eq!(s.expose(), "ghp_supersecret");
    }
}
