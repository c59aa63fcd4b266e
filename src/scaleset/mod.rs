//! GitHub's runner scale set API, the Actions service that actions-runner-controller and GitHub's
//! own Go client (`actions/scaleset`) speak, as `../shared/SCALESET.md` summarises it: the admin
//! connection (registration token → `actions/runner-registration` → the service URL and an admin
//! JWT, renewed before it expires), runner groups, scale sets, JIT configs, runners, message
//! sessions and the long-poll message queue with its job messages. Owns that protocol and its
//! recoveries (a session refreshed once on a 401 from the queue, a 409 session conflict waited
//! out within bounds, a session an earlier run left deleted at start). Shares authentication and
//! retry rules with [`crate::github`] and says where they differ (`client`'s doc); knows nothing
//! of dockerd, containers or how many runners to start: that is `sysrunner scale`'s.

mod client;
mod session;
mod types;

pub use client::{
    API_VERSION, ActionsClient, Options, QueueAnswer, RENEW_BEFORE, ScaleSetJit, ScalesetError,
    ensure_labels, jwt_exp, needs_renewal, with_api_version,
};
pub use session::{ConflictPolicy, MessageSession, Session};
pub use types::{
    Job, JobMessage, QueueMessage, RunnerGroup, RunnerRef, RunnerSetting, ScaleSet, ScaleSetLabel,
    Statistics, job_messages,
};
