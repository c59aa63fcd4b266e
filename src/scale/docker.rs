//! The host's Docker Engine, as `sysrunner scale` uses it: through its API on the socket (bollard),
//! never the `docker` CLI. Owns the calls (runtimes, the image's labels, create and start a runner
//! container, list ours by label, wait, stop, remove with its volumes; inspect, make, start and
//! connect the cache container) and their errors; decides nothing: which containers to make and
//! when is the controller's, what they are is `spec`'s.

use super::spec::{
    CACHE_DATA, CacheSeen, CacheSpec, LABEL_RUNNER, LABEL_RUNNER_ID, LABEL_SET, RunnerSpec,
};
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, HostConfig, NetworkConnectRequest, RestartPolicy, RestartPolicyNameEnum,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, StopContainerOptions,
    WaitContainerOptions,
};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("Docker Engine at {socket}: {what}: {source}")]
pub struct EngineError {
    pub socket: String,
    pub what: String,
    #[source]
    pub source: bollard::errors::Error,
}

impl From<EngineError> for crate::error::Error {
    fn from(e: EngineError) -> Self {
        crate::error::Error::Engine(Box::new(e))
    }
}

/// A container of ours that the engine lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: String,
    pub runner_name: String,
    pub runner_id: Option<u64>,
    pub running: bool,
}

/// The image: its id (to notice an update) and its runner version label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    pub id: String,
    pub runner_version: Option<String>,
}

#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    socket: String,
}

impl Engine {
    /// Connects to the socket and agrees on an API version with the daemon (older engines
    /// refuse a client's newer version).
    pub async fn connect(socket: &Path) -> Result<Engine, EngineError> {
        let name = socket.display().to_string();
        let err = |what: &str, source| EngineError {
            socket: name.clone(),
            what: what.into(),
            source,
        };
        let docker = Docker::connect_with_unix(&name, 120, bollard::API_DEFAULT_VERSION)
            .map_err(|e| err("connect", e))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| err("agree on an API version", e))?;
        Ok(Engine {
            docker,
            socket: name,
        })
    }

    fn err(&self, what: impl Into<String>, source: bollard::errors::Error) -> EngineError {
        EngineError {
            socket: self.socket.clone(),
            what: what.into(),
            source,
        }
    }

    /// Creates the container `name` (not started).
    async fn create(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<bollard::models::ContainerCreateResponse, EngineError> {
        let opts = CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        self.docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| self.err(format!("create the container {name}"), e))
    }

    /// The OCI runtimes the daemon lists (`docker info`), sorted.
    pub async fn runtimes(&self) -> Result<Vec<String>, EngineError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| self.err("read its info", e))?;
        let mut names: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
        names.sort();
        Ok(names)
    }

    /// The image's id and runner version label; `None` when the image is not there.
    pub async fn image(&self, image: &str) -> Result<Option<ImageFacts>, EngineError> {
        match self.docker.inspect_image(image).await {
            Ok(i) => Ok(Some(ImageFacts {
                id: i.id.unwrap_or_default(),
                runner_version: i
                    .config
                    .and_then(|c| c.labels)
                    .and_then(|l| l.get(super::spec::LABEL_RUNNER_VERSION).cloned()),
            })),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.err(format!("inspect the image {image}"), e)),
        }
    }

    /// Creates and starts the runner's container; its id. A container created but not started
    /// is removed before the error is returned.
    pub async fn start(&self, spec: &RunnerSpec) -> Result<String, EngineError> {
        let host = HostConfig {
            runtime: spec.runtime.clone(),
            privileged: Some(spec.privileged),
            nano_cpus: spec.limits.nano_cpus.map(|n| n as i64),
            memory: spec.limits.memory.map(|m| m as i64),
            pids_limit: spec.limits.pids.map(i64::from),
            network_mode: Some(spec.network.clone()),
            tmpfs: Some(spec.tmpfs.clone().into_iter().collect()),
            auto_remove: Some(false),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(spec.environment()),
            labels: Some(
                spec.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            host_config: Some(host),
            ..Default::default()
        };
        let created = self.create(&spec.name, body).await?;
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            let _ = self.remove(&created.id).await;
            return Err(self.err(format!("start the container {}", spec.name), e));
        }
        Ok(created.id)
    }

    /// Every runner container of the scale set `set`, running or not: both labels, so that
    /// nothing but a runner (not the cache, not a container labelled by hand with the set
    /// alone) is ever adopted or removed as one.
    pub async fn ours(&self, set: &str) -> Result<Vec<Found>, EngineError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_SET}={set}"), LABEL_RUNNER.to_string()],
        )]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.err("list the scale set's containers", e))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                Some(Found {
                    id: c.id?,
                    runner_name: labels.get(LABEL_RUNNER).cloned().unwrap_or_default(),
                    runner_id: labels.get(LABEL_RUNNER_ID).and_then(|i| i.parse().ok()),
                    running: c.state.is_some_and(|s| {
                        matches!(
                            s,
                            bollard::models::ContainerSummaryStateEnum::RUNNING
                                | bollard::models::ContainerSummaryStateEnum::RESTARTING
                                | bollard::models::ContainerSummaryStateEnum::PAUSED
                        )
                    }),
                })
            })
            .collect())
    }

    /// Waits for the container to exit; its exit code (`None` when the engine could not say, or
    /// the container is gone).
    pub async fn wait(&self, id: &str) -> Option<i64> {
        let mut s = self.docker.wait_container(id, None::<WaitContainerOptions>);
        match s.next().await {
            Some(Ok(r)) => Some(r.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Some(code),
            Some(Err(e)) => {
                tracing::warn!(container = id, "waiting for the container: {e}");
                None
            }
            None => None,
        }
    }

    /// SIGTERM (the image's STOPSIGNAL), then SIGKILL after `grace`.
    pub async fn stop(&self, id: &str, grace: std::time::Duration) -> Result<(), EngineError> {
        let t = i32::try_from(grace.as_millis().div_ceil(1000)).unwrap_or(i32::MAX);
        match self
            .docker
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: Some(t),
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            // Gone, or already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 304,
                ..
            }) => Ok(()),
            Err(e) => Err(self.err(format!("stop the container {id}"), e)),
        }
    }

    /// Removes the container and its anonymous volumes, running or not; gone already is done.
    pub async fn remove(&self, id: &str) -> Result<(), EngineError> {
        match self
            .docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    v: true,
                    force: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            // "removal already in progress": another remover got there first.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(self.err(format!("remove the container {id}"), e)),
        }
    }

    /// The container named `name` (the cache), with its address on `network`; `None` when there
    /// is none.
    pub async fn cache(&self, name: &str, network: &str) -> Result<Option<CacheSeen>, EngineError> {
        let c = match self.docker.inspect_container(name, None).await {
            Ok(c) => c,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(self.err(format!("inspect the container {name}"), e)),
        };
        let status = c
            .state
            .and_then(|s| s.status)
            .map(|s| s.to_string())
            .unwrap_or_default();
        let attached = c
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut n| n.remove(network))
            .map(|e| {
                [e.ip_address, e.global_ipv6_address]
                    .into_iter()
                    .flatten()
                    .find_map(|a| a.parse().ok())
            });
        Ok(Some(CacheSeen {
            id: c.id.unwrap_or_default(),
            status,
            attached,
        }))
    }

    /// Makes the cache container and starts it: its volume first when missing (labelled like
    /// it; an existing volume of that name is used as it is), then the container, restart policy
    /// `always`, on its network. Its id.
    pub async fn make_cache(&self, spec: &CacheSpec) -> Result<String, EngineError> {
        let labels: HashMap<String, String> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match self.docker.inspect_volume(&spec.volume).await {
            Ok(_) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                self.docker
                    .create_volume(VolumeCreateRequest {
                        name: Some(spec.volume.clone()),
                        labels: Some(labels.clone()),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| self.err(format!("create the volume {}", spec.volume), e))?;
            }
            Err(e) => return Err(self.err(format!("inspect the volume {}", spec.volume), e)),
        }
        let host = HostConfig {
            binds: Some(vec![format!("{}:{CACHE_DATA}", spec.volume)]),
            network_mode: Some(spec.network.clone()),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::ALWAYS),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(spec.env.clone()),
            labels: Some(labels),
            host_config: Some(host),
            ..Default::default()
        };
        let created = self.create(&spec.name, body).await?;
        // Created but not started, it is found and started by the next look.
        self.start_existing(&created.id).await?;
        Ok(created.id)
    }

    /// Starts an existing container; already running is done.
    pub async fn start_existing(&self, id: &str) -> Result<(), EngineError> {
        match self.docker.start_container(id, None).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(self.err(format!("start the container {id}"), e)),
        }
    }

    /// Connects the container to `network`.
    pub async fn attach(&self, network: &str, id: &str) -> Result<(), EngineError> {
        self.docker
            .connect_network(
                network,
                NetworkConnectRequest {
                    container: id.to_string(),
                    endpoint_config: None,
                },
            )
            .await
            .map_err(|e| self.err(format!("connect the container {id} to {network}"), e))
    }
}
