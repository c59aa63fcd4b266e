//! A fake GitHub, a product of its own: GitHub's REST API for self-hosted runners (repository,
//! organization and enterprise scopes, runner groups, labels, registration/remove tokens, JIT
//! configs, downloads, the App and its installation tokens, the rate limit) as
//! `runners-openapi.json` describes it, plus the runner's side that GitHub never shows
//! (`/_fake/runner/…`), the Actions service of the runner scale set API (`/_actions/{scope}/…`,
//! reached through `POST /actions/runner-registration`), and a control API for tests
//! (`/_fake/control/…`).
//!
//! It shares no code or types with the product's client (sysrunner's `github`) or settings
//! (its `config`), and cannot: the kit does not depend on sysrunner (see the crate's doc).
//! A shared type would carry a shared mistake past every test.
//! The contracts (REFERENCE.md, the OpenAPI file) are the common ground. The protocols of its own
//! are written down in `README.md` beside this file.
//!
//! Modules: `config` (what it starts with), `state` (what it remembers), `auth` (who may do
//! what), `rest` (GitHub's API), `runner_api` (the runner's side), `actions` (the scale set
//! API's Actions service) and `scaleset` (what it remembers), `control` (the test API),
//! `server` (HTTP, faults, the request log), `client` (a typed control client), `wire` (the JSON
//! of its own protocols), `cli` (`sysrunner-testkit fake-github`).

mod actions;
mod auth;
pub mod cli;
mod client;
mod config;
mod control;
mod rest;
mod runner_api;
mod scaleset;
mod server;
mod state;
mod time;
pub mod wire;

pub use client::{ControlClient, ControlError};
pub use config::{
    ALL_GRANTS_PAT, APP_CLIENT_ID, APP_ID, AppConfig, ENTERPRISE_INSTALLATION_ID, EnterpriseConfig,
    FakeConfig, InstallationConfig, ORG_INSTALLATION_ID, OrgConfig, PatConfig, REPO_ONLY_PAT,
    RepoConfig, TEST_APP_PUBLIC_KEY_PEM,
};
pub use wire::{
    Fault, FaultRule, FaultState, Job, JobResult, JobSpec, JobStatus, NewRunner, Outcome,
    RequestRecord, RunJob, RunnerState, ScaleSetSessionState, ScaleSetState, ScaleSetStatistics,
    SetRunnerState,
};

use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    /// The configuration cannot describe a GitHub (the message names the field and the value).
    #[error("fake-github config: {0}")]
    Config(String),
    #[error("fake-github cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running fake GitHub. Dropping it stops the server and closes every connection.
#[derive(Debug)]
pub struct FakeGitHub {
    addr: SocketAddr,
    web_url: String,
    api_url: String,
    task: tokio::task::JoinHandle<()>,
}

impl FakeGitHub {
    /// Binds `cfg.listen` (port 0 picks one) and serves until dropped or [`FakeGitHub::stop`]ped.
    pub async fn start(cfg: FakeConfig) -> Result<FakeGitHub, FakeError> {
        let state = state::State::new(cfg)?;
        let listen = state.cfg.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| FakeError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| FakeError::Bind {
            addr: listen,
            source,
        })?;
        // URLs name an address a client can reach: a wildcard bind is reached over loopback.
        let shown = match addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::from(([127, 0, 0, 1], addr.port()))
            }
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
            }
            _ => addr,
        };
        let web_url = if state.cfg.public_url.is_empty() {
            format!("http://{shown}")
        } else {
            state.cfg.public_url.trim_end_matches('/').to_owned()
        };
        let api_url = format!("{web_url}{}", state.cfg.base_path);
        let mut state = state;
        state.actions.web_url = web_url.clone();
        let shared = Arc::new(server::Shared::new(state, web_url.clone()));
        let task = tokio::spawn(server::serve(listener, shared));
        Ok(FakeGitHub {
            addr,
            web_url,
            api_url,
            task,
        })
    }

    /// The address it is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The REST base URL a client is configured with: `http://ADDR` plus the base path.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The root URL, which the runner's `gitHubUrl` starts with (`http://ADDR`).
    pub fn web_url(&self) -> &str {
        &self.web_url
    }

    /// The Actions-service base URL the fake hands out for a scope (`repos/o/r`, `orgs/o`,
    /// `enterprises/e`) in `POST …/actions/runner-registration`: `http://ADDR/_actions/orgs/o/`.
    pub fn actions_url(&self, scope: &str) -> String {
        format!("{}/_actions/{}/", self.web_url, scope.trim_matches('/'))
    }

    /// A client for the control API.
    pub fn control(&self) -> ControlClient {
        ControlClient::new(&self.web_url)
    }

    /// Stops serving and waits until the listener is closed.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}
