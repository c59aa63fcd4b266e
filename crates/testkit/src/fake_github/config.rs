//! What a fake GitHub starts with: its address, the scopes it knows, the credentials it accepts and
//! the App. Plain data with a default for tests; also read from a JSON file by `sysrunner-testkit fake-github`.

use super::FakeError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The PAT of the default config that may do everything (classic scopes `repo`, `admin:org`,
/// `manage_runners:enterprise`).
pub const ALL_GRANTS_PAT: &str = "ghp_fakeAllGrants0000000000000000000000";
/// The PAT of the default config with only the classic `repo` scope.
pub const REPO_ONLY_PAT: &str = "ghp_fakeRepoOnly00000000000000000000000";
/// The default App's id (a JWT's `iss` may be this number, as a number or a string).
pub const APP_ID: u64 = 4242;
/// The default App's client id (also accepted as a JWT's `iss`).
pub const APP_CLIENT_ID: &str = "Iv1.fake4242c0ffee00";
/// The default App's installation on the organization (all its repositories).
pub const ORG_INSTALLATION_ID: u64 = 1001;
/// The default App's installation on the enterprise (which cannot manage enterprise runners).
pub const ENTERPRISE_INSTALLATION_ID: u64 = 1002;
/// The public half of `tests/keys/app.pem` (this package's; sysrunner's tests keep the same key
/// in theirs), the default App's key.
pub const TEST_APP_PUBLIC_KEY_PEM: &str = include_str!("../../tests/keys/app.pub.pem");

/// Everything a fake GitHub starts with. Unknown fields in a config file are an error.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FakeConfig {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The URL clients reach it by, when that is not the listening address (it listens on
    /// `0.0.0.0:8080` in a container others reach as `http://github:8080`): it goes into the URLs
    /// it hands out (JIT configs, `url` fields). Empty: `http://` + the listening address.
    pub public_url: String,
    /// An extra prefix under which the REST API is also served, e.g. `/api/v3` (GHES-style).
    /// The REST API is always served at `/` too. Empty for none.
    pub base_path: String,
    pub repos: Vec<RepoConfig>,
    pub orgs: Vec<OrgConfig>,
    pub enterprises: Vec<EnterpriseConfig>,
    pub pats: Vec<PatConfig>,
    pub app: Option<AppConfig>,
    /// Lifetime of installation access tokens (GitHub: 3600). Tests use a few seconds.
    pub installation_token_ttl_secs: u64,
    /// Lifetime of registration and remove tokens (GitHub: 3600).
    pub runner_token_ttl_secs: u64,
    /// The runner version `downloads` offers.
    pub runner_version: String,
    /// Versions below this are reported deprecated by `…/runners/deprecations/{version}`.
    pub min_runner_version: String,
    /// `x-ratelimit-limit` of the core resource.
    pub rate_limit: u64,
    /// The longest a runner's job poll waits before answering 204.
    pub long_poll_max_secs: u64,
    /// Lifetime of the Actions service's admin token (the JWT `POST …/actions/runner-registration`
    /// hands out; the `exp` a scale set client reads). Tests shorten it to exercise the refresh.
    pub actions_admin_token_ttl_secs: u64,
    /// Lifetime of a message session's queue token (`messageQueueAccessToken`); a session refresh
    /// (PATCH) issues a new one.
    pub actions_queue_token_ttl_secs: u64,
    /// A message session with no queue poll or refresh for this long has expired: a new session
    /// may be created, and deleting the old one is 400 `RunnerScaleSetSessionExpiredException`.
    pub actions_session_idle_secs: u64,
    /// A runner whose listener has not been heard from (session, job poll, job start, renewal or
    /// completion) for this long is offline, as GitHub shows a runner whose process died; a job it
    /// held fails ("lost communication"). The fake runner renews a quarter of this apart while a
    /// job runs. Control-made `online` sessions never lapse.
    pub runner_session_idle_secs: u64,
    /// How long a message-queue GET waits for a message before answering 202 (GitHub: ~50 s).
    pub actions_message_wait_millis: u64,
}

/// A repository: `owner/name`. Its owner is an organization when `orgs` lists it, a user otherwise.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub full_name: String,
    pub id: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgConfig {
    pub login: String,
    pub id: u64,
    /// Runner groups besides `Default` (id 1); they get ids 2, 3, … in this order.
    #[serde(default)]
    pub runner_groups: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnterpriseConfig {
    pub slug: String,
    pub id: u64,
    /// Runner groups besides `Default` (id 1); they get ids 2, 3, … in this order.
    #[serde(default)]
    pub runner_groups: Vec<String>,
}

/// A classic personal access token and its OAuth scopes. The runner endpoints need `repo`
/// (repositories), `admin:org` or `manage_runners:org` (organizations), `manage_runners:enterprise`
/// or `admin:enterprise` (enterprises).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatConfig {
    pub token: String,
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub id: u64,
    pub client_id: String,
    pub slug: String,
    pub name: String,
    /// The App's RSA public key (PEM, SPKI or PKCS#1): JWTs must verify against it.
    pub public_key_pem: String,
    pub installations: Vec<InstallationConfig>,
}

/// One installation of the App on an account (an org, a user or an enterprise).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallationConfig {
    pub id: u64,
    /// Org login, user login or enterprise slug.
    pub account: String,
    /// `Organization`, `User` or `Enterprise`.
    pub target_type: String,
    /// `all` (every repository of the account) or `selected` (those in `repositories`).
    pub repository_selection: String,
    /// Repository names (without owner) when the selection is `selected`.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// GitHub App permission names to `read`/`write`: repository runners need `administration`,
    /// organization runners `organization_self_hosted_runners`.
    pub permissions: BTreeMap<String, String>,
}

impl Default for FakeConfig {
    /// Repository `octo-org/octo-repo`, organization `octo-org` (groups `Default` and
    /// `sysrunner`), enterprise `octo-ent`, the PATs [`ALL_GRANTS_PAT`] and [`REPO_ONLY_PAT`], and
    /// App [`APP_ID`] with the key of `tests/keys/app.pem`, installed on the organization (all
    /// repositories) and on the enterprise.
    fn default() -> Self {
        FakeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: String::new(),
            base_path: String::new(),
            repos: vec![RepoConfig {
                full_name: "octo-org/octo-repo".into(),
                id: 1_296_269,
            }],
            orgs: vec![OrgConfig {
                login: "octo-org".into(),
                id: 9_919,
                runner_groups: vec!["sysrunner".into()],
            }],
            enterprises: vec![EnterpriseConfig {
                slug: "octo-ent".into(),
                id: 42,
                runner_groups: vec![],
            }],
            pats: vec![
                PatConfig {
                    token: ALL_GRANTS_PAT.into(),
                    scopes: vec![
                        "repo".into(),
                        "admin:org".into(),
                        "manage_runners:enterprise".into(),
                    ],
                },
                PatConfig {
                    token: REPO_ONLY_PAT.into(),
                    scopes: vec!["repo".into()],
                },
            ],
            app: Some(AppConfig {
                id: APP_ID,
                client_id: APP_CLIENT_ID.into(),
                slug: "sysrunner-fake".into(),
                name: "sysrunner fake".into(),
                public_key_pem: TEST_APP_PUBLIC_KEY_PEM.into(),
                installations: vec![
                    InstallationConfig {
                        id: ORG_INSTALLATION_ID,
                        account: "octo-org".into(),
                        target_type: "Organization".into(),
                        repository_selection: "all".into(),
                        repositories: vec![],
                        permissions: [
                            ("administration", "write"),
                            ("organization_self_hosted_runners", "write"),
                            ("metadata", "read"),
                        ]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    },
                    InstallationConfig {
                        id: ENTERPRISE_INSTALLATION_ID,
                        account: "octo-ent".into(),
                        target_type: "Enterprise".into(),
                        repository_selection: "selected".into(),
                        repositories: vec![],
                        permissions: [("enterprise_organization_installations", "read")]
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    },
                ],
            }),
            installation_token_ttl_secs: 3600,
            runner_token_ttl_secs: 3600,
            runner_version: "2.336.0".into(),
            min_runner_version: "2.329.0".into(),
            rate_limit: 5000,
            long_poll_max_secs: 25,
            actions_admin_token_ttl_secs: 600,
            actions_queue_token_ttl_secs: 3600,
            actions_session_idle_secs: 300,
            runner_session_idle_secs: 120,
            actions_message_wait_millis: 1500,
        }
    }
}

impl FakeConfig {
    /// Reads a JSON config file; absent fields take the [`Default`] values.
    pub fn from_file(path: &std::path::Path) -> Result<FakeConfig, FakeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FakeError::Config(format!("cannot read {}: {e}", path.display())))?;
        let cfg: FakeConfig = serde_json::from_str(&text).map_err(|e| {
            FakeError::Config(format!("{}: not a fake-github config: {e}", path.display()))
        })?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Rejects what would make the fake ambiguous: a base path not of the form `/a/b`, two
    /// repositories or accounts with one name, a repository name without an owner.
    pub fn check(&self) -> Result<(), FakeError> {
        let bp = &self.base_path;
        if !bp.is_empty() && (!bp.starts_with('/') || bp.ends_with('/')) {
            return Err(FakeError::Config(format!(
                "base_path {bp:?}: expected empty or like \"/api/v3\""
            )));
        }
        let mut names = std::collections::BTreeSet::new();
        for r in &self.repos {
            let Some((o, n)) = r.full_name.split_once('/') else {
                return Err(FakeError::Config(format!(
                    "repo {:?}: expected OWNER/NAME",
                    r.full_name
                )));
            };
            if o.is_empty() || n.is_empty() || n.contains('/') {
                return Err(FakeError::Config(format!(
                    "repo {:?}: expected OWNER/NAME",
                    r.full_name
                )));
            }
            if !names.insert(format!("repo:{}", r.full_name.to_lowercase())) {
                return Err(FakeError::Config(format!(
                    "repo {:?} is listed twice",
                    r.full_name
                )));
            }
        }
        for o in &self.orgs {
            if !names.insert(format!("org:{}", o.login.to_lowercase())) {
                return Err(FakeError::Config(format!(
                    "org {:?} is listed twice",
                    o.login
                )));
            }
        }
        for e in &self.enterprises {
            if !names.insert(format!("ent:{}", e.slug.to_lowercase())) {
                return Err(FakeError::Config(format!(
                    "enterprise {:?} is listed twice",
                    e.slug
                )));
            }
        }
        if self.long_poll_max_secs == 0 {
            return Err(FakeError::Config(
                "long_poll_max_secs must be at least 1".to_string(),
            ));
        }
        for (name, v) in [
            (
                "actions_admin_token_ttl_secs",
                self.actions_admin_token_ttl_secs,
            ),
            (
                "actions_queue_token_ttl_secs",
                self.actions_queue_token_ttl_secs,
            ),
            ("actions_session_idle_secs", self.actions_session_idle_secs),
            ("runner_session_idle_secs", self.runner_session_idle_secs),
        ] {
            if v == 0 {
                return Err(FakeError::Config(format!(
                    "{name} must be at least 1, got 0"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_consistent_and_round_trips() {
        let cfg = FakeConfig::default();
        cfg.check().unwrap();
        let text = serde_json::to_string(&cfg).unwrap();
        let back: FakeConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back.repos[0].full_name, "octo-org/octo-repo");
        let partial: FakeConfig = serde_json::from_str(r#"{"base_path": "/api/v3"}"#).unwrap();
        assert_eq!(partial.pats.len(), 2);
        partial.check().unwrap();
    }

    #[test]
    fn bad_base_path_and_unknown_fields_are_refused() {
        let cfg = FakeConfig {
            base_path: "api/v3/".into(),
            ..FakeConfig::default()
        };
        assert!(cfg.check().is_err());
        assert!(serde_json::from_str::<FakeConfig>(r#"{"nope": 1}"#).is_err());
    }
}
