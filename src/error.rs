//! Every way a command fails, by cause: the error the commands return to the binary's edge, where
//! `exit` turns it into a code. Owns the list of causes only; each module's own error (settings,
//! GitHub, registration, dockerd, the runner, the assessment) is kept whole inside it, and says
//! itself what went wrong. Decides no exit code.

use crate::assess::Unsupported;
use crate::config::{Bad, Problems};
use crate::dockerd::LaunchError;
use crate::github::ApiError;
use crate::reaper::ExitStatus;
use crate::register::RegisterError;
use crate::runner::Failure;
use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Nothing was started.
    /// Settings that failed validation, every problem at once.
    #[error("{} invalid setting(s)", .0.0.len())]
    Settings(#[from] Problems),
    /// A flag that is not a setting (`prune --grace`).
    #[error("--{flag}={value:?} {source}")]
    Flag {
        flag: &'static str,
        value: String,
        source: Bad,
    },
    /// clap refused the command line.
    #[error(transparent)]
    CommandLine(#[from] clap::Error),
    /// RUNNER_USER does not exist in the image, or is root.
    #[error("{0}")]
    RunnerUser(String),

    // This container cannot run dockerd.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// LIFE_SANDBOX=required where the container cannot sandbox a life.
    #[error("{0}")]
    Sandbox(String),

    // GitHub.
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Register(#[from] RegisterError),

    // A life that may go better in a fresh container.
    #[error("dockerd did not start: {0}")]
    Dockerd(#[from] LaunchError),
    /// `pristine::restore` failed (its errors are text).
    #[error("cannot restore a pristine life: {0}")]
    Pristine(String),
    /// The life's sandbox was planned but could not be built.
    #[error("{0}")]
    SandboxBuild(String),
    /// `config.sh` did not succeed (REGISTRATION=config).
    #[error("config.sh failed: {0}")]
    Configure(String),
    #[error("cannot start the runner: {0}")]
    ListenerStart(#[source] io::Error),
    #[error(transparent)]
    Runner(#[from] Failure),
    #[error("dockerd died ({status}) while the runner was {runner}: stopped the runner")]
    DockerdDied {
        status: ExitStatus,
        runner: &'static str,
    },
    /// `dockerd-check`: the command run against dockerd failed (`None`: it did not start, or a
    /// signal ended it).
    #[error("the command against dockerd failed (exit {})", .0.map_or("none".into(), |c| c.to_string()))]
    CheckCommand(Option<i32>),

    // sysrunner itself.
    #[error("cannot become the reaper of orphans: {0}")]
    Reaper(#[source] io::Error),
    #[error("lost the listener's exit status")]
    ListenerLost,
    /// `dockerd-check`: processes were still running after dockerd stopped.
    #[error("{0} processes left after dockerd stopped")]
    LeftRunning(usize),
    #[error("cannot capture into {}: {source}", dest.display())]
    Capture { dest: PathBuf, source: io::Error },
    #[error("cannot write the report as JSON: {0}")]
    Json(#[from] serde_json::Error),

    // `sysrunner scale`.
    #[error(transparent)]
    Scaleset(#[from] crate::scaleset::ScalesetError),
    /// The host's Docker Engine failed a call (`scale`'s `EngineError`, boxed here so that this
    /// module stays below `scale`, which uses it).
    #[error(transparent)]
    Engine(Box<dyn std::error::Error + Send + Sync>),
    /// No runtime for runner containers (SCALE_RUNTIME and what the host's Docker lists).
    #[error("{0}")]
    ScaleRuntime(String),
    /// SCALE_IMAGE is not on the host.
    #[error("{0}")]
    ScaleImage(String),
    /// SCALE_LISTEN cannot be bound.
    #[error("{0}")]
    ScaleListen(String),

    /// `healthcheck`: the published state or dockerd says no.
    #[error("unhealthy: {0}")]
    Unhealthy(String),
}
