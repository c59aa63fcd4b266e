//! The client's view of GitHub's JSON: only the fields it reads. Written from the REST contract
//! (docs/contracts.md, and GitHub's own tests/fixtures/github-api/runners-openapi.json); shares
//! nothing with the fake GitHub, whose types must not be these.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Runner {
    pub id: u64,
    pub name: String,
    /// `online` or `offline`.
    pub status: String,
    pub busy: bool,
    #[serde(default)]
    pub labels: Vec<Label>,
}

impl Runner {
    pub fn online(&self) -> bool {
        self.status == "online"
    }
}

/// One entry of `actions/runners/downloads` (`runner-application`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RunnerDownload {
    pub os: String,
    pub architecture: String,
    /// `actions-runner-linux-x64-2.338.0.tar.gz`.
    pub filename: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Label {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RunnerList {
    #[allow(dead_code)]
    pub total_count: u64,
    pub runners: Vec<Runner>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct JitConfigAnswer {
    pub runner: Runner,
    pub encoded_jit_config: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenAnswer {
    pub token: String,
    pub expires_at: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct InstallationAnswer {
    pub id: u64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RunnerGroups {
    pub runner_groups: Vec<RunnerGroup>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RunnerGroup {
    pub id: u64,
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub message: String,
}
