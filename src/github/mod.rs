//! The GitHub REST client for runner registration: just-in-time configs, registration and remove
//! tokens, listing, reading and deleting runners, for repositories, organizations and enterprises,
//! with a PAT or a GitHub App. Owns authentication (App JWTs, cached installation tokens), retries
//! by GitHub's rules within an operation's deadline, and the meaning of each error answer
//! ([`ApiError`]). Knows nothing of dockerd or the runner process, and chooses no exit code.
//! Written from docs/contracts.md.

mod client;
pub mod prune;
pub mod retry;
mod types;

pub use client::{
    Client, ClientOptions, Deleted, JitConfig, RegistrationToken, alternate_name, default_labels,
};
pub use retry::{RealTime, Time};
pub use types::{Label, Runner, RunnerDownload};

use std::time::Duration;

/// Why an operation failed, and whether a retry can help; the exit code each means is
/// `crate::exit`'s decision.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401, a 403 that is not a rate limit, 404 of the scope, 422: retrying will not help.
    #[error("GitHub refused {what}: {status} {message}. {hint}")]
    Refused {
        what: String,
        status: u16,
        message: String,
        hint: String,
    },
    /// A live runner already has this name.
    #[error(
        "a runner named {name} is online at GitHub (id {id}): two containers share RUNNER_NAME. Give each its own name (unset RUNNER_NAME to use RUNNER_NAME_PREFIX-<hostname>), or stop the other one"
    )]
    Duplicate { name: String, id: u64 },
    /// Every retry failed, or the next wait would pass API_DEADLINE.
    #[error(
        "GitHub did not answer {what} after {attempts} attempts in {elapsed:?} (API_DEADLINE {deadline:?}); last: {last}"
    )]
    Unavailable {
        what: String,
        attempts: u32,
        elapsed: Duration,
        deadline: Duration,
        last: String,
    },
    /// An answer we could not read.
    #[error("unexpected answer to {what}: {detail}")]
    Unexpected { what: String, detail: String },
}
