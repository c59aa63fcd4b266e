//! The runner's environment: the container's, minus every sysrunner setting and `*_FILE` path and
//! the variables of other runner images (the settings table says which), plus what the runner user
//! needs. Pure: the container's environment is given. It must never pass on a setting or a
//! secret; the settings table, not a list here, says which variables those are.

use std::collections::BTreeMap;

/// Builds the runner's environment. Proxy variables, `TZ`, CA bundles, `ACTIONS_RUNNER_HOOK_*` and
/// a derived image's `ENV` pass through because they are not settings.
pub fn runner_env(
    container: impl IntoIterator<Item = (String, String)>,
    user: &str,
    home: &str,
    docker_host: Option<&str>,
) -> BTreeMap<String, String> {
    let kept: Vec<&str> = crate::config::kept_from_runner().collect();
    let mut env: BTreeMap<String, String> = container
        .into_iter()
        .filter(|(k, _)| !kept.contains(&k.as_str()))
        // Every ACTIONS_RUNNER_INPUT_* would configure the runner: only sysrunner sets those.
        .filter(|(k, _)| !k.starts_with("ACTIONS_RUNNER_INPUT_"))
        // sysrunner's own plumbing (the secrets hand-off) is nothing for jobs.
        .filter(|(k, _)| !k.starts_with("SYSRUNNER_"))
        .collect();
    env.insert("HOME".into(), home.into());
    env.insert("USER".into(), user.into());
    env.insert("LOGNAME".into(), user.into());
    // Without an inner dockerd, a DOCKER_HOST of the container's own (a remote engine) stays.
    if let Some(h) = docker_host {
        env.insert("DOCKER_HOST".into(), h.into());
    }
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_secrets_and_foreign_variables_are_dropped() {
        let env = runner_env(
            e(&[
                ("ACCESS_TOKEN", "ghp_x"),
                ("ACCESS_TOKEN_FILE", "/run/secrets/t"),
                ("APP_PRIVATE_KEY", "pem"),
                ("REPO", "o/r"),
                ("RUNNER_TOKEN", "AAA"),
                ("ACTIONS_RUNNER_INPUT_JITCONFIG", "b64"),
                ("ACTIONS_RUNNER_INPUT_TOKEN", "tok"),
                ("LOG_LEVEL", "debug"),
            ]),
            "runner",
            "/home/runner",
            Some("unix:///var/run/docker.sock"),
        );
        for k in [
            "ACCESS_TOKEN",
            "ACCESS_TOKEN_FILE",
            "APP_PRIVATE_KEY",
            "REPO",
            "RUNNER_TOKEN",
            "ACTIONS_RUNNER_INPUT_JITCONFIG",
            "ACTIONS_RUNNER_INPUT_TOKEN",
            "LOG_LEVEL",
        ] {
            assert!(!env.contains_key(k), "{k} leaked");
        }
    }

    #[test]
    fn proxies_tz_ca_hooks_and_image_env_pass_and_user_vars_are_set() {
        let env = runner_env(
            e(&[
                ("HTTPS_PROXY", "http://proxy:3128"),
                ("no_proxy", "localhost"),
                ("TZ", "Europe/Berlin"),
                ("SSL_CERT_FILE", "/etc/ssl/ca.pem"),
                ("ACTIONS_RUNNER_HOOK_JOB_STARTED", "/hooks/start.sh"),
                ("MY_IMAGE_ENV", "1"),
                ("HOME", "/root"),
                ("USER", "root"),
            ]),
            "runner",
            "/home/runner",
            Some("unix:///var/run/docker.sock"),
        );
        for k in [
            "HTTPS_PROXY",
            "no_proxy",
            "TZ",
            "SSL_CERT_FILE",
            "ACTIONS_RUNNER_HOOK_JOB_STARTED",
            "MY_IMAGE_ENV",
            "PATH",
        ] {
            assert!(env.contains_key(k), "{k} missing");
        }
        assert_eq!(env["HOME"], "/home/runner");
        assert_eq!(env["USER"], "runner");
        assert_eq!(env["DOCKER_HOST"], "unix:///var/run/docker.sock");
    }

    #[test]
    fn without_an_inner_dockerd_the_containers_docker_host_stays() {
        let env = runner_env(
            e(&[("DOCKER_HOST", "tcp://builder:2376")]),
            "runner",
            "/home/runner",
            None,
        );
        assert_eq!(env["DOCKER_HOST"], "tcp://builder:2376");
        let env = runner_env(e(&[]), "runner", "/home/runner", None);
        assert!(!env.contains_key("DOCKER_HOST"));
        let env = runner_env(
            e(&[("DOCKER_HOST", "tcp://builder:2376")]),
            "runner",
            "/home/runner",
            Some("unix:///var/run/docker.sock"),
        );
        assert_eq!(env["DOCKER_HOST"], "unix:///var/run/docker.sock");
    }
}
