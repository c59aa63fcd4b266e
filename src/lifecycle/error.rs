//! Why a life ended early, as values: what the machine decides on and the binary's edge turns
//! into an exit code ([`LifeError::exit`], the one mapping). Owns no behaviour.

use super::register::RegisterError;
use crate::exit::Exit;
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum LifeError {
    #[error("cannot become the reaper of orphans: {0}")]
    Reaper(#[source] io::Error),
    #[error("sysrunner cannot run dockerd here ({runtime}): {reasons}")]
    Unsupported {
        runtime: &'static str,
        reasons: String,
    },
    #[error("{0}")]
    RunnerUser(String),
    #[error("cannot restore a pristine life: {0}")]
    Pristine(String),
    #[error("dockerd did not start: {0}")]
    DockerdStart(String),
    #[error("registration failed: {0}")]
    Register(#[source] RegisterError),
    #[error("config.sh failed: {0}")]
    Configure(String),
    #[error("cannot start the runner: {0}")]
    ListenerSpawn(#[source] io::Error),
    /// The listener ended in a way that ends the life (crash, too many restarts, deprecated).
    #[error("{reason}")]
    Runner {
        reason: String,
        /// A deprecated version, and the controller asked to hear it as exit 7.
        version_deprecated: bool,
    },
    #[error("dockerd died ({status}) while the runner was {runner}: stopped the runner")]
    DockerdDied {
        status: String,
        runner: &'static str,
    },
}

impl LifeError {
    /// The exit code a supervisor sees for this error: the only place a life's errors meet
    /// [`Exit`].
    pub fn exit(&self) -> Exit {
        match self {
            LifeError::Reaper(_) => Exit::Internal,
            LifeError::Unsupported { .. } => Exit::Unsupported,
            // The image's user table is wrong: a configuration problem, not a temporary one.
            LifeError::RunnerUser(_) => Exit::Usage,
            LifeError::Register(e) => e.exit,
            LifeError::Runner {
                version_deprecated: true,
                ..
            } => Exit::VersionDeprecated,
            LifeError::Pristine(_)
            | LifeError::DockerdStart(_)
            | LifeError::Configure(_)
            | LifeError::ListenerSpawn(_)
            | LifeError::Runner { .. }
            | LifeError::DockerdDied { .. } => Exit::TempFail,
        }
    }
}
