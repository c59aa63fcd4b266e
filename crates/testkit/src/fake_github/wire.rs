//! The JSON bodies of the fake's own protocols (`/_fake/control/…` and `/_fake/runner/…`), shared
//! by the server and [`super::ControlClient`], and the scale set statistics the control API shows
//! with the Actions service's names. GitHub's REST shapes are not here: the REST handlers
//! write them straight from the OpenAPI description.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `POST /_fake/control/jobs`: a job for the runner that will carry this name, or (with
/// `labels`) a job for a runner scale set whose labels cover them (see `README.md`, "Runner
/// scale sets"). Exactly one of `runner_name` and `labels` is given.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobSpec {
    /// Empty for a scale set's job.
    #[serde(default)]
    pub runner_name: String,
    /// The job's name, as `Running job: <name>` shows it.
    pub name: String,
    /// Shell commands, run in order; the job fails at the first one that fails.
    pub steps: Vec<String>,
    /// Only a runner of this scope takes it (`repos/o/r`, `orgs/o`, `enterprises/e`); any if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The workflow's `runs-on` labels: the job goes to the message queues of the scale sets
    /// whose name and labels include every one of them (case-insensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for a runner with its name to poll.
    Queued,
    /// Handed to a runner that has not said it started.
    Assigned,
    InProgress,
    Completed,
}

/// The result words of actions/runner's `Job <name> completed with result: …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobResult {
    Succeeded,
    Failed,
    Canceled,
}

/// A job as the control API reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: u64,
    pub runner_name: String,
    pub name: String,
    pub steps: Vec<String>,
    #[serde(default)]
    pub scope: Option<String>,
    pub status: JobStatus,
    #[serde(default)]
    pub result: Option<JobResult>,
    /// What the runner reported as the job's output (all steps).
    #[serde(default)]
    pub output: String,
    /// The REST id of the runner that took it.
    #[serde(default)]
    pub runner_id: Option<u64>,
    /// A scale set's job: the `runs-on` labels it was queued with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// A scale set's job: its `runnerRequestId` in the message queue and `acquirejobs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_request_id: Option<u64>,
    /// The scale set that acquired it (`None` while it is available to every matching one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_set_id: Option<u64>,
}

/// The job a runner receives from `GET /_fake/runner/jobs/next`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobMessage {
    pub id: u64,
    pub name: String,
    pub steps: Vec<String>,
}

/// `POST /_fake/runner/jobs/{id}/complete`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobCompletion {
    pub result: JobResult,
    #[serde(default)]
    pub output: String,
}

/// `POST /_fake/runner/session`: what the runner says about itself when it goes online.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionRequest {
    /// Shown as the REST runner's `os` (default `Linux`).
    #[serde(default)]
    pub os: Option<String>,
    /// Shown as the REST runner's `version`.
    #[serde(default)]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionResponse {
    pub session_id: String,
    pub runner_id: u64,
    pub runner_name: String,
    /// How often a runner renews the job it runs (`POST /_fake/runner/jobs/{id}/renew`), so that
    /// it does not go offline while it has no poll open; actions/runner renews its job lock.
    #[serde(default)]
    pub renew_secs: u64,
}

/// `POST /_fake/runner/config`: `config.sh --url U --token T …` as one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigRequest {
    /// The scope's web URL: `{web}/OWNER/REPO`, `{web}/ORG` or `{web}/enterprises/ENT`.
    pub url: String,
    /// A registration token for that scope.
    pub token: String,
    pub name: String,
    #[serde(default)]
    pub labels: Vec<String>,
    /// Without this, `self-hosted`, `Linux` and `X64` are added (read-only), as config.sh does.
    #[serde(default)]
    pub no_default_labels: bool,
    /// A runner group name (organizations and enterprises); `Default` if absent.
    #[serde(default)]
    pub runner_group: Option<String>,
    #[serde(default)]
    pub work_folder: Option<String>,
    #[serde(default)]
    pub ephemeral: bool,
    /// Replace a runner that already has this name instead of answering 409.
    #[serde(default)]
    pub replace: bool,
}

/// `POST /_fake/runner/remove` (`config.sh remove --token T`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveRequest {
    pub token: String,
}

/// One request the fake received (control requests excepted), with its answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestRecord {
    /// 1, 2, 3, … in arrival order.
    pub seq: u64,
    pub method: String,
    /// The path as received.
    pub path: String,
    /// For GitHub REST requests: the path without the base prefix (`/repos/…`); `None` for the
    /// fake's own prefixes.
    #[serde(default)]
    pub api_path: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
    /// `user-agent`, `accept`, `content-type`, `x-github-api-version` as sent, and
    /// `authorization` reduced to its scheme and the kind of credential (`Bearer <pat>`).
    pub request_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub request_body: Option<serde_json::Value>,
    /// `None` when no answer was sent (a hang).
    #[serde(default)]
    pub status: Option<u16>,
    /// Every header the fake set (names in lower case).
    pub response_headers: BTreeMap<String, String>,
    /// The JSON body; `None` for an empty body.
    #[serde(default)]
    pub response_body: Option<serde_json::Value>,
    pub outcome: Outcome,
    /// The fault rule that shaped this answer, if any.
    #[serde(default)]
    pub fault: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The response was sent.
    Answered,
    /// The operation took effect, then the connection was closed without an answer.
    Dropped,
    /// Nothing happened; the connection was held, then closed without an answer.
    Hung,
}

/// A runner with everything the fake knows about it (`GET /_fake/control/runners`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunnerState {
    pub id: u64,
    pub name: String,
    /// `repos/o/r`, `orgs/o` or `enterprises/e`.
    pub scope: String,
    pub runner_group_id: u64,
    /// `online` or `offline`.
    pub status: String,
    pub busy: bool,
    pub ephemeral: bool,
    /// Made by generate-jitconfig (true) or by the config exchange (false).
    pub jit: bool,
    pub os: String,
    #[serde(default)]
    pub version: Option<String>,
    pub labels: Vec<String>,
    pub work_folder: String,
    /// The live session, if online through one (a control-made `online` has `control`).
    #[serde(default)]
    pub session: Option<String>,
    /// The job the runner holds.
    #[serde(default)]
    pub job: Option<u64>,
    /// The runner scale set whose JIT config made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_set_id: Option<u64>,
}

/// `POST /_fake/control/runners`: put a runner in place without the REST API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewRunner {
    pub scope: String,
    pub name: String,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub runner_group_id: Option<u64>,
    #[serde(default)]
    pub ephemeral: bool,
}

/// `POST /_fake/control/runners/{id}/state`: absent fields stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SetRunnerState {
    /// `online` (a session held by the control API, so a runner's own session is refused with
    /// 409: a live duplicate) or `offline` (ends any session).
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub busy: Option<bool>,
}

/// `POST /_fake/control/faults`: the next `count` requests matching `method` and `path` get `fault`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRule {
    /// An HTTP method, or `*` for any.
    pub method: String,
    /// Matched against the path without the base prefix; `*` matches any run of characters,
    /// `/` included: `*/actions/runners/generate-jitconfig`, `/orgs/octo-org/actions/runners*`.
    pub path: String,
    pub count: u32,
    pub fault: Fault,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// A `basic-error` answer with this 5xx status; nothing happens.
    ServerError { status: u16 },
    /// 429 with `retry-after`.
    TooManyRequests { retry_after_secs: u64 },
    /// 403 `API rate limit exceeded…` with `x-ratelimit-remaining: 0` and a reset this far ahead.
    RateLimited { reset_after_secs: u64 },
    /// 403 `You have exceeded a secondary rate limit…`, with `retry-after` when given.
    SecondaryRateLimit {
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    /// Hold the connection this long without doing anything, then close it without an answer.
    Hang { millis: u64 },
    /// Do the operation, then close the connection without an answer.
    DropAfterEffect,
}

/// A fault rule with what is left of it (`GET /_fake/control/faults`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultState {
    pub id: u64,
    pub rule: FaultRule,
    pub remaining: u32,
}

/// `GET /_fake/control/info`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Info {
    /// Root URL: the "web" URL runners get as `gitHubUrl` (plus the scope path).
    pub web_url: String,
    /// The REST base: `web_url` plus the base path.
    pub api_url: String,
    /// Epoch seconds of the fake's clock.
    pub now: i64,
}

/// `POST /_fake/control/clock`: move the fake's clock forward (token expiry, JWT checks).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdvanceClock {
    pub secs: u64,
}

/// `POST /_fake/control/runners/{id}/run`: the runner takes its next job (as `jobs/next` would
/// hand it out), starts it and completes it with this result, without a session of its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunJob {
    #[serde(default = "succeeded")]
    pub result: JobResult,
    #[serde(default)]
    pub output: String,
}

fn succeeded() -> JobResult {
    JobResult::Succeeded
}

impl Default for RunJob {
    fn default() -> Self {
        RunJob {
            result: JobResult::Succeeded,
            output: String::new(),
        }
    }
}

/// A scale set's statistics, with the Actions service's names (`RunnerScaleSetStatistic`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSetStatistics {
    /// Jobs queued for labels the scale set covers that no scale set has acquired.
    pub total_available_jobs: u64,
    /// Jobs this scale set acquired that no runner has started yet.
    pub total_acquired_jobs: u64,
    /// Jobs this scale set acquired that have not completed: acquired plus running.
    pub total_assigned_jobs: u64,
    /// Jobs a runner of this scale set started and has not completed.
    pub total_running_jobs: u64,
    /// Runners made from this scale set's JIT configs that still exist.
    pub total_registered_runners: u64,
    pub total_busy_runners: u64,
    /// Registered minus busy.
    pub total_idle_runners: u64,
}

/// A scale set's message session as the control API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleSetSessionState {
    pub session_id: String,
    pub owner_name: String,
    /// Epoch seconds (the fake's clock) when the session expires unless polled or refreshed.
    pub expires_at: i64,
    /// Epoch seconds when its current queue token expires.
    pub queue_token_expires_at: i64,
    /// Whether it is still live (not expired).
    pub live: bool,
}

/// A runner scale set with everything the fake knows about it (`GET /_fake/control/scalesets`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleSetState {
    pub id: u64,
    pub name: String,
    /// `repos/o/r`, `orgs/o` or `enterprises/e`.
    pub scope: String,
    /// The Actions-service base URL of its scope (ends with `/`).
    pub actions_url: String,
    pub runner_group_id: u64,
    /// Label names.
    pub labels: Vec<String>,
    pub statistics: ScaleSetStatistics,
    #[serde(default)]
    pub session: Option<ScaleSetSessionState>,
    /// Ids of the messages handed out (or ready) and not deleted yet, oldest first.
    pub unacked_messages: Vec<u64>,
    /// Job events not yet put into a message.
    pub pending_events: usize,
    /// The `X-ScaleSetMaxCapacity` of the last queue poll.
    #[serde(default)]
    pub last_max_capacity: Option<u64>,
}
