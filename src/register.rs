//! Registration behind one interface, so a fourth way (a credential-holding service outside the
//! runner container) can be added without touching the lifecycle: `jit` (one generate-jitconfig
//! call), `config` (a registration token for `config.sh --ephemeral`), and pre-made (a controller
//! gave us the JIT config: no API call, and the controller owns deregistration). Owns the choice
//! of calls for each way and the `config.sh` arguments; the HTTP, retries and meaning of GitHub's
//! answers are `github`'s, when to register and deregister is the lifecycle's.

use crate::config::{Choice, Mode, Registration, RunSettings};
use crate::github::{ApiError, Client, Deleted, RunnerDownload};
use crate::secret::Secret;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How the listener gets its identity.
#[derive(Debug, Clone)]
pub enum Start {
    /// Passed as ACTIONS_RUNNER_INPUT_JITCONFIG, never in argv.
    Jit(Secret),
    /// `config.sh` first, with the token as ACTIONS_RUNNER_INPUT_TOKEN and these arguments.
    Configure { token: Secret, args: Vec<String> },
}

#[derive(Debug, Clone)]
pub struct Registered {
    /// Known after registration for `jit`; read from `.runner` after `config.sh` for `config`;
    /// unknown for pre-made.
    pub runner_id: Option<u64>,
    pub name: String,
    pub start: Start,
}

/// Why registering, deregistering or looking up a runner failed. Every way registers through
/// GitHub's API today, so its error is the only cause; it is kept whole, because whether a retry
/// helps (GitHub unavailable) or not (refused, a duplicate name) is in it.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Api(#[from] ApiError),
}

pub trait Registrar: Send + Sync {
    /// `jit`, `config`, `pre-made`: for the log.
    fn kind(&self) -> &'static str;
    /// Registers one ephemeral runner. `known_id` is the runner this container recorded earlier.
    fn register(&self, known_id: Option<u64>) -> BoxFut<'_, Result<Registered, RegisterError>>;
    /// Whether deregistration is ours (false: a controller owns it).
    fn deregisters(&self) -> bool;
    /// Deletes the runner: `Busy` when it is running a job right now.
    fn deregister(&self, runner_id: u64) -> BoxFut<'_, Result<Deleted, RegisterError>>;
    /// Deletes a runner an earlier life recorded but never deleted, if it still has `name`.
    fn delete_leftover(
        &self,
        runner_id: u64,
        name: &str,
    ) -> BoxFut<'_, Result<Option<Deleted>, RegisterError>>;
    /// The runner releases GitHub offers for the scope; `None` without credentials.
    fn runner_downloads(&self) -> Option<BoxFut<'static, Result<Vec<RunnerDownload>, ApiError>>>;
}

/// Registration through the REST API with our own credentials.
pub struct ApiRegistrar {
    pub client: Arc<Client>,
    pub mode: Mode,
    pub name: String,
    pub labels: Vec<String>,
    pub group: String,
    pub workdir: String,
    pub no_default_labels: bool,
    /// The scope's web URL, for `config.sh --url`.
    pub url: String,
}

impl ApiRegistrar {
    fn labels(&self) -> Vec<String> {
        let mut all = if self.no_default_labels {
            Vec::new()
        } else {
            crate::github::default_labels()
        };
        for l in &self.labels {
            if !all.iter().any(|a| a.eq_ignore_ascii_case(l)) {
                all.push(l.clone());
            }
        }
        all
    }
}

impl Registrar for ApiRegistrar {
    fn kind(&self) -> &'static str {
        self.mode.word()
    }

    fn register(&self, known_id: Option<u64>) -> BoxFut<'_, Result<Registered, RegisterError>> {
        Box::pin(async move {
            match self.mode {
                Mode::Jit => {
                    let j = self
                        .client
                        .jit_config(
                            &self.name,
                            &self.group,
                            &self.labels(),
                            &self.workdir,
                            known_id,
                        )
                        .await?;
                    Ok(Registered {
                        runner_id: Some(j.runner_id),
                        name: j.runner_name,
                        start: Start::Jit(j.encoded),
                    })
                }
                Mode::Config => {
                    // A leftover of the same name is replaced by config.sh --replace, unless it
                    // is this container's own runner still busy with a job an earlier life was
                    // cut off in: GitHub refuses to replace a busy runner (422), so this life
                    // takes a name of its own, as the JIT registration does; the old one goes
                    // offline once GitHub gives up on its job, for a later life or `prune`.
                    let name = match known_id {
                        Some(id) => {
                            let other = crate::github::alternate_name(&self.name, rand::random());
                            tracing::warn!(
                                runner_id = id,
                                "the runner this container left is busy with a job an earlier life was cut off in: registering as {other}"
                            );
                            other
                        }
                        None => self.name.clone(),
                    };
                    let t = self.client.registration_token().await?;
                    let mut args = vec![
                        "--unattended".into(),
                        "--url".into(),
                        self.url.clone(),
                        "--name".into(),
                        name.clone(),
                        "--work".into(),
                        self.workdir.clone(),
                        "--ephemeral".into(),
                        "--replace".into(),
                        "--disableupdate".into(),
                    ];
                    if !self.labels.is_empty() {
                        args.extend(["--labels".into(), self.labels.join(",")]);
                    }
                    if self.no_default_labels {
                        args.push("--no-default-labels".into());
                    }
                    if !matches!(self.client.scope(), crate::config::Scope::Repo { .. }) {
                        args.extend(["--runnergroup".into(), self.group.clone()]);
                    }
                    Ok(Registered {
                        runner_id: None,
                        name,
                        start: Start::Configure {
                            token: t.token,
                            args,
                        },
                    })
                }
            }
        })
    }

    fn deregisters(&self) -> bool {
        true
    }

    fn deregister(&self, runner_id: u64) -> BoxFut<'_, Result<Deleted, RegisterError>> {
        Box::pin(async move { Ok(self.client.delete_runner(runner_id).await?) })
    }

    fn delete_leftover(
        &self,
        runner_id: u64,
        name: &str,
    ) -> BoxFut<'_, Result<Option<Deleted>, RegisterError>> {
        let name = name.to_string();
        Box::pin(async move {
            match self.client.get_runner(runner_id).await? {
                Some(r) if r.name == name => Ok(Some(self.client.delete_runner(runner_id).await?)),
                _ => Ok(None),
            }
        })
    }

    fn runner_downloads(&self) -> Option<BoxFut<'static, Result<Vec<RunnerDownload>, ApiError>>> {
        let client = self.client.clone();
        Some(Box::pin(async move { client.runner_downloads().await }))
    }
}

/// A controller (actions-runner-controller) made the registration.
pub struct PreMade {
    pub jit_config: Secret,
    pub name: String,
}

impl Registrar for PreMade {
    fn kind(&self) -> &'static str {
        "pre-made"
    }
    fn register(&self, _: Option<u64>) -> BoxFut<'_, Result<Registered, RegisterError>> {
        Box::pin(async move {
            Ok(Registered {
                runner_id: None,
                name: self.name.clone(),
                start: Start::Jit(self.jit_config.clone()),
            })
        })
    }
    fn deregisters(&self) -> bool {
        false
    }
    fn deregister(&self, _: u64) -> BoxFut<'_, Result<Deleted, RegisterError>> {
        Box::pin(async { Ok(Deleted::NotFound) })
    }
    fn delete_leftover(
        &self,
        _: u64,
        _: &str,
    ) -> BoxFut<'_, Result<Option<Deleted>, RegisterError>> {
        Box::pin(async { Ok(None) })
    }
    fn runner_downloads(&self) -> Option<BoxFut<'static, Result<Vec<RunnerDownload>, ApiError>>> {
        None
    }
}

/// The registrar the settings ask for.
pub fn from_settings(
    s: &RunSettings,
    time: Arc<dyn crate::github::Time>,
) -> Result<Box<dyn Registrar>, RegisterError> {
    match &s.registration {
        Registration::PreMade { jit_config, .. } => Ok(Box::new(PreMade {
            jit_config: jit_config.clone(),
            name: s.runner.name.clone(),
        })),
        Registration::Api { scope, auth, mode } => {
            let client = Client::new(
                &s.github.api,
                scope.clone(),
                auth.clone(),
                crate::github::ClientOptions {
                    request_timeout: s.timeouts.api,
                    deadline: s.timeouts.api_deadline,
                    time,
                },
            )?;
            Ok(Box::new(ApiRegistrar {
                client: Arc::new(client),
                mode: *mode,
                name: s.runner.name.clone(),
                labels: s.runner.labels.clone(),
                group: s.runner.group.clone(),
                workdir: s.runner.workdir.clone(),
                no_default_labels: s.runner.no_default_labels,
                url: format!("{}{}", s.github.web, scope.web_path()),
            }))
        }
    }
}
