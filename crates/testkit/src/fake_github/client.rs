//! A typed client for the control API, for tests and the demo. It speaks only `/_fake/control/…`;
//! GitHub's REST API is for the product's own client (or a test's plain HTTP calls).

use super::wire::{
    AdvanceClock, FaultRule, FaultState, Info, Job, JobSpec, JobStatus, NewRunner, RequestRecord,
    RunJob, RunnerState, ScaleSetState, SetRunnerState,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control API unreachable: {0}")]
    Http(#[from] reqwest::Error),
    #[error("control API answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("job {id} still {status:?} after {waited:?}")]
    JobTimeout {
        id: u64,
        status: JobStatus,
        waited: Duration,
    },
}

/// The control API of one fake, by its root URL (`http://ADDR`).
#[derive(Debug, Clone)]
pub struct ControlClient {
    http: reqwest::Client,
    root: String,
}

impl ControlClient {
    pub fn new(web_url: &str) -> ControlClient {
        ControlClient {
            // The fake is on loopback: a proxy from the environment must not be used.
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("a reqwest client without TLS settings builds"),
            root: web_url.trim_end_matches('/').to_string(),
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&dyn erased::Body>,
    ) -> Result<T, ControlError> {
        let mut req = self
            .http
            .request(method, format!("{}/_fake/control/{path}", self.root));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_json());
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ControlError::Status { status, message });
        }
        let text = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(text).map_err(|e| ControlError::Status {
            status,
            message: format!("unexpected body: {e}"),
        })
    }

    pub async fn info(&self) -> Result<Info, ControlError> {
        self.call(reqwest::Method::GET, "info", None).await
    }

    pub async fn queue_job(&self, spec: &JobSpec) -> Result<Job, ControlError> {
        self.call(reqwest::Method::POST, "jobs", Some(spec)).await
    }

    pub async fn job(&self, id: u64) -> Result<Job, ControlError> {
        self.call(reqwest::Method::GET, &format!("jobs/{id}"), None)
            .await
    }

    pub async fn jobs(&self) -> Result<Vec<Job>, ControlError> {
        self.call(reqwest::Method::GET, "jobs", None).await
    }

    /// Polls a job until it completes, for at most `timeout`.
    pub async fn wait_job(&self, id: u64, timeout: Duration) -> Result<Job, ControlError> {
        let start = tokio::time::Instant::now();
        loop {
            let job = self.job(id).await?;
            if job.status == JobStatus::Completed {
                return Ok(job);
            }
            if start.elapsed() >= timeout {
                return Err(ControlError::JobTimeout {
                    id,
                    status: job.status,
                    waited: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Every logged request, oldest first.
    pub async fn requests(&self) -> Result<Vec<RequestRecord>, ControlError> {
        self.call(reqwest::Method::GET, "requests", None).await
    }

    /// Logged requests with `seq` greater than `seq`.
    pub async fn requests_since(&self, seq: u64) -> Result<Vec<RequestRecord>, ControlError> {
        self.call(reqwest::Method::GET, &format!("requests?since={seq}"), None)
            .await
    }

    pub async fn clear_requests(&self) -> Result<(), ControlError> {
        self.call(reqwest::Method::DELETE, "requests", None).await
    }

    pub async fn runners(&self) -> Result<Vec<RunnerState>, ControlError> {
        self.call(reqwest::Method::GET, "runners", None).await
    }

    pub async fn create_runner(&self, new: &NewRunner) -> Result<RunnerState, ControlError> {
        self.call(reqwest::Method::POST, "runners", Some(new)).await
    }

    pub async fn set_runner_state(
        &self,
        id: u64,
        set: &SetRunnerState,
    ) -> Result<RunnerState, ControlError> {
        self.call(
            reqwest::Method::POST,
            &format!("runners/{id}/state"),
            Some(set),
        )
        .await
    }

    /// Makes runner `id` run its next job to `run.result` (taken, started, completed), as a
    /// runner process would through the runner's side; returns the completed job.
    pub async fn run_job(&self, id: u64, run: &RunJob) -> Result<Job, ControlError> {
        self.call(
            reqwest::Method::POST,
            &format!("runners/{id}/run"),
            Some(run),
        )
        .await
    }

    /// Every runner scale set, with its statistics, session and unacknowledged messages.
    pub async fn scale_sets(&self) -> Result<Vec<ScaleSetState>, ControlError> {
        self.call(reqwest::Method::GET, "scalesets", None).await
    }

    /// Adds a fault rule; returns its id (which the request log's `fault` field names).
    pub async fn add_fault(&self, rule: &FaultRule) -> Result<u64, ControlError> {
        let v: serde_json::Value = self
            .call(reqwest::Method::POST, "faults", Some(rule))
            .await?;
        Ok(v["id"].as_u64().unwrap_or(0))
    }

    pub async fn faults(&self) -> Result<Vec<FaultState>, ControlError> {
        self.call(reqwest::Method::GET, "faults", None).await
    }

    pub async fn clear_faults(&self) -> Result<(), ControlError> {
        self.call(reqwest::Method::DELETE, "faults", None).await
    }

    /// Moves the fake's clock forward (tokens expire, JWTs age) without waiting.
    pub async fn advance_clock(&self, secs: u64) -> Result<Info, ControlError> {
        self.call(reqwest::Method::POST, "clock", Some(&AdvanceClock { secs }))
            .await
    }
}

/// Request bodies of different types through one `call`.
mod erased {
    pub trait Body: Sync {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: super::Serialize + Sync> Body for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}
