//! The pull-through registry cache (DOCKER_REGISTRY_CACHE): which registry mirrors a life's inner
//! dockerd gets, decided from the settings (pure, [`decide`]) and from one `GET <cache>/v2/`
//! within DOCKER_REGISTRY_CACHE_TIMEOUT ([`check`], the only effect here). Owns that decision and
//! its report ([`Registry`], in `probe --json` and the health state). It never writes daemon.json
//! nor signals dockerd: [`crate::dockerd::launch`] applies the outcome.

use crate::config::{DockerSettings, DockerdMode};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The header every distribution registry answers `/v2/` with.
pub const API_VERSION_HEADER: &str = "Docker-Distribution-Api-Version";

/// Where the inner dockerd pulls Docker Hub images from, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Registry {
    /// DOCKER_REGISTRY_MIRRORS: the operator's own mirrors; the cache is not asked.
    Mirrors { mirrors: Vec<String> },
    /// The cache answered: Docker Hub images come through it.
    Cache { url: String, answered_ms: u64 },
    /// From each registry itself: no cache is set, or it did not answer (`reason`).
    Direct {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache: Option<String>,
        reason: String,
    },
}

impl Registry {
    /// The inner dockerd's `registry-mirrors`.
    pub fn mirrors(&self) -> Vec<String> {
        match self {
            Registry::Mirrors { mirrors } => mirrors.clone(),
            Registry::Cache { url, .. } => vec![url.clone()],
            Registry::Direct { .. } => Vec::new(),
        }
    }

    /// One line for people (`probe`, the life's log).
    pub fn human(&self) -> String {
        match self {
            Registry::Mirrors { mirrors } => format!(
                "pulls through DOCKER_REGISTRY_MIRRORS ({})",
                mirrors.join(", ")
            ),
            Registry::Cache { url, answered_ms } => format!(
                "pulls Docker Hub images through the cache {url} (it answered in {answered_ms} ms)"
            ),
            Registry::Direct { reason, .. } => format!("pulls directly: {reason}"),
        }
    }

    /// The word for logs and scripts: `mirrors`, `cache` or `direct`.
    pub fn word(&self) -> &'static str {
        match self {
            Registry::Mirrors { .. } => "mirrors",
            Registry::Cache { .. } => "cache",
            Registry::Direct { .. } => "direct",
        }
    }
}

/// What the settings leave to find out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Known without asking anyone.
    Known(Registry),
    /// Ask the cache's `/v2/` within `timeout`.
    Check { url: String, timeout: Duration },
}

/// DOCKER_REGISTRY_MIRRORS wins; without a cache (or without a dockerd) there is nothing to ask.
/// In a life sandbox dockerd has a network namespace of its own, where the container's loopback
/// is not: a cache there would answer the check and never a pull.
pub fn decide(docker: &DockerSettings, sandboxed: bool) -> Option<Decision> {
    if docker.dockerd == DockerdMode::Off {
        return None;
    }
    Some(if !docker.registry_mirrors.is_empty() {
        Decision::Known(Registry::Mirrors {
            mirrors: docker.registry_mirrors.clone(),
        })
    } else if let Some(url) = docker
        .registry_cache
        .as_ref()
        .filter(|u| sandboxed && on_loopback(u))
    {
        Decision::Known(Registry::Direct {
            cache: Some(url.clone()),
            reason: format!(
                "the cache {url} (DOCKER_REGISTRY_CACHE) is on this container's loopback, which a life sandbox's dockerd cannot reach; remedy: give the cache's address on the network (compose: http://cache:5000)"
            ),
        })
    } else if let Some(url) = &docker.registry_cache {
        Decision::Check {
            url: url.clone(),
            timeout: docker.registry_cache_timeout,
        }
    } else {
        Decision::Known(Registry::Direct {
            cache: None,
            reason: "DOCKER_REGISTRY_CACHE is not set".into(),
        })
    })
}

/// Whether `url`'s host is a loopback name or address.
fn on_loopback(url: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    match u.host() {
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// What a `/v2/` answer means: a registry answers 200, or 401 where it wants a login (a mirror
/// dockerd cannot log in to still serves nothing, but that is the operator's to see), and always
/// with [`API_VERSION_HEADER`] `registry/2.0`.
pub fn judge(status: u16, api_version: Option<&str>) -> Result<(), String> {
    let v2 = api_version.is_some_and(|v| v.trim().starts_with("registry/2.0"));
    match (status, v2) {
        (200, true) => Ok(()),
        (401, true) => Err(
            "it answered 401: it wants a login, which dockerd does not give a mirror; remedy: let the cache serve pulls without one (its own Docker Hub credentials are the cache's, not the runners')".into(),
        ),
        (s, true) => Err(format!("it answered HTTP {s} to /v2/")),
        (s, false) => Err(format!(
            "it answered HTTP {s} to /v2/ without `{API_VERSION_HEADER}: registry/2.0`: is it a registry?"
        )),
    }
}

/// The outcome of asking `url` (with how long it took, or why it would not do).
pub fn outcome(url: &str, asked: Result<Duration, String>, timeout: Duration) -> Registry {
    match asked {
        Ok(took) => Registry::Cache {
            url: url.to_string(),
            answered_ms: took.as_millis() as u64,
        },
        Err(why) => Registry::Direct {
            cache: Some(url.to_string()),
            reason: format!(
                "the cache {url} (DOCKER_REGISTRY_CACHE) did not answer /v2/ within {timeout:?}: {why}"
            ),
        },
    }
}

/// `GET <url>/v2/` within `timeout`: how long the answer took, or why it would not do.
pub async fn check(url: &str, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("no HTTP client: {e}"))?;
    let endpoint = format!("{}/v2/", url.trim_end_matches('/'));
    let answer = tokio::time::timeout(timeout, client.get(&endpoint).send())
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
        .map_err(|e| describe(&e, timeout))?;
    let api = answer
        .headers()
        .get(API_VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    judge(answer.status().as_u16(), api.as_deref())?;
    Ok(started.elapsed())
}

/// Decides, asking the cache where the settings say so.
pub async fn resolve(decision: Decision) -> Registry {
    match decision {
        Decision::Known(r) => r,
        Decision::Check { url, timeout } => outcome(&url, check(&url, timeout).await, timeout),
    }
}

fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {timeout:?}");
    }
    // The innermost cause says it plainly ("Connection refused", "failed to lookup address").
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DataPolicy, ImageStore};

    fn docker() -> DockerSettings {
        DockerSettings {
            dockerd: DockerdMode::On,
            registry_mirrors: vec![],
            registry_cache: None,
            registry_cache_timeout: Duration::from_secs(2),
            image_store: ImageStore::GraphDriver,
            mtu: None,
            data: DataPolicy::Ephemeral,
            ready_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_operators_mirrors_win_over_the_cache() {
        let mut d = docker();
        d.registry_mirrors = vec!["https://mirror.corp.example".into()];
        d.registry_cache = Some("http://cache:5000".into());
        assert_eq!(
            decide(&d, false),
            Some(Decision::Known(Registry::Mirrors {
                mirrors: vec!["https://mirror.corp.example".into()]
            }))
        );
    }

    #[test]
    fn a_cache_is_asked_within_its_timeout() {
        let mut d = docker();
        d.registry_cache = Some("http://cache:5000".into());
        d.registry_cache_timeout = Duration::from_millis(700);
        assert_eq!(
            decide(&d, false),
            Some(Decision::Check {
                url: "http://cache:5000".into(),
                timeout: Duration::from_millis(700)
            })
        );
    }

    #[test]
    fn a_cache_on_loopback_is_not_asked_from_a_sandboxed_life() {
        for url in [
            "http://127.0.0.1:5000",
            "http://localhost:5000",
            "http://[::1]:5000",
        ] {
            let mut d = docker();
            d.registry_cache = Some(url.into());
            let Some(Decision::Known(r)) = decide(&d, true) else {
                panic!("{url}: {:?}", decide(&d, true));
            };
            assert_eq!(r.word(), "direct");
            assert!(r.human().contains("loopback"), "{}", r.human());
            // Without the sandbox, dockerd shares the container's loopback: it is asked.
            assert!(matches!(decide(&d, false), Some(Decision::Check { .. })));
        }
        let mut d = docker();
        d.registry_cache = Some("http://cache:5000".into());
        assert!(matches!(decide(&d, true), Some(Decision::Check { .. })));
    }

    #[test]
    fn without_a_cache_or_a_dockerd_nothing_is_asked() {
        let d = docker();
        let Some(Decision::Known(r)) = decide(&d, false) else {
            panic!("{:?}", decide(&d, false));
        };
        assert_eq!(r.word(), "direct");
        assert!(r.mirrors().is_empty());
        let mut off = docker();
        off.dockerd = DockerdMode::Off;
        off.registry_cache = Some("http://cache:5000".into());
        assert_eq!(decide(&off, false), None);
    }

    #[test]
    fn only_a_registrys_answer_makes_it_the_mirror() {
        assert_eq!(judge(200, Some("registry/2.0")), Ok(()));
        assert_eq!(judge(200, Some(" registry/2.0 ")), Ok(()));
        assert!(
            judge(401, Some("registry/2.0"))
                .unwrap_err()
                .contains("login")
        );
        assert!(
            judge(503, Some("registry/2.0"))
                .unwrap_err()
                .contains("503")
        );
        // A web server on the port, not a registry.
        assert!(judge(200, None).unwrap_err().contains("is it a registry"));
        assert!(judge(404, Some("nginx")).is_err());
    }

    #[test]
    fn the_outcome_names_the_cache_and_why() {
        let t = Duration::from_secs(2);
        let ok = outcome("http://cache:5000", Ok(Duration::from_millis(3)), t);
        assert_eq!(ok.mirrors(), ["http://cache:5000"]);
        assert_eq!(ok.word(), "cache");
        let no = outcome("http://cache:5000", Err("Connection refused".into()), t);
        assert!(no.mirrors().is_empty());
        let text = no.human();
        for part in [
            "pulls directly",
            "http://cache:5000",
            "DOCKER_REGISTRY_CACHE",
            "2s",
            "refused",
        ] {
            assert!(text.contains(part), "{part:?} not in {text:?}");
        }
        let json = serde_json::to_value(&no).unwrap();
        assert_eq!(json["mode"], "direct");
        assert_eq!(json["cache"], "http://cache:5000");
        assert_eq!(serde_json::from_value::<Registry>(json).unwrap(), no);
    }

    /// Real sockets on loopback: a refusing port and a listener that never answers are both
    /// "direct" within the bound; a minimal registry answer is "cache".
    #[tokio::test]
    async fn the_check_against_real_sockets() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let t = Duration::from_millis(500);
        // Refusing: bind, learn the port, close.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        // Each ends within its bound (a wide margin: the machine may be loaded; what the bound
        // costs is measured in BENCHMARK.md).
        let within = Duration::from_secs(5);
        let started = Instant::now();
        let refused = check(&format!("http://127.0.0.1:{port}"), t).await;
        assert!(refused.is_err(), "{refused:?}");
        assert!(started.elapsed() < within, "{:?}", started.elapsed());
        // Hanging: accepts and never answers.
        let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hang_at = hang.local_addr().unwrap();
        let _held = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Ok((s, _)) = hang.accept().await {
                kept.push(s);
            }
        });
        let started = Instant::now();
        let hung = check(&format!("http://{hang_at}"), t).await;
        assert!(hung.unwrap_err().contains("no answer within"));
        let took = started.elapsed();
        assert!(took >= t && took < within, "{took:?}");
        // A registry's answer.
        let reg = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let reg_at = reg.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = reg.accept().await {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let asked = String::from_utf8_lossy(&buf[..n]).to_string();
                let body = if asked.starts_with("GET /v2/ ") {
                    "{}"
                } else {
                    ""
                };
                let status = if body.is_empty() {
                    "404 Not Found"
                } else {
                    "200 OK"
                };
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\n{API_VERSION_HEADER}: registry/2.0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        let answered = check(&format!("http://{reg_at}/"), t).await;
        assert!(answered.is_ok(), "{answered:?}");
    }
}
