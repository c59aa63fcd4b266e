//! The Actions service's JSON, as GitHub's own client (`actions/scaleset` `types.go`) reads and
//! writes it (`../shared/SCALESET.md` §2–4): camelCase names, `RunnerSetting` with a capital R,
//! `jobId` a string, lists as `{"count","value"}`. Only what sysrunner reads or sends.

use serde::{Deserialize, Serialize};

/// `{"count": n, "value": [...]}` (the count is the value's length, and not read).
#[derive(Debug, Clone, Deserialize)]
pub struct List<T> {
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerGroup {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub is_default_group: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleSetLabel {
    /// `System` for the labels a scale set is made with.
    #[serde(rename = "type", default)]
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerSetting {
    #[serde(default)]
    pub disable_update: bool,
}

/// What the service counts for a scale set; every message and session carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Statistics {
    pub total_available_jobs: i64,
    pub total_acquired_jobs: i64,
    pub total_assigned_jobs: i64,
    pub total_running_jobs: i64,
    pub total_registered_runners: i64,
    pub total_busy_runners: i64,
    pub total_idle_runners: i64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSet {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub id: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub runner_group_id: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub runner_group_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<ScaleSetLabel>,
    #[serde(rename = "RunnerSetting", default)]
    pub runner_setting: RunnerSetting,
    #[serde(default, skip_serializing)]
    pub runner_jit_config_url: Option<String>,
    #[serde(default, skip_serializing)]
    pub statistics: Option<Statistics>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JitRequest<'a> {
    pub name: &'a str,
    pub work_folder: &'a str,
}

/// A runner as the agents endpoint and a JIT answer name it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerRef {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub runner_scale_set_id: u64,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JitAnswer {
    pub runner: RunnerRef,
    #[serde(rename = "encodedJITConfig")]
    pub encoded_jit_config: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRequest<'a> {
    /// The nil UUID: the service assigns one.
    pub session_id: &'a str,
    pub owner_name: &'a str,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionAnswer {
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub owner_name: String,
    #[serde(default)]
    pub message_queue_url: String,
    #[serde(default)]
    pub message_queue_access_token: String,
    #[serde(default)]
    pub statistics: Option<Statistics>,
}

// The JIT config and the queue token are credentials: never in a `{:?}`.
impl std::fmt::Debug for JitAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitAnswer")
            .field("runner", &self.runner)
            .field("encoded_jit_config", &"<redacted>")
            .finish()
    }
}

impl std::fmt::Debug for SessionAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionAnswer")
            .field("session_id", &self.session_id)
            .field("owner_name", &self.owner_name)
            .field("message_queue_url", &self.message_queue_url)
            .field("message_queue_access_token", &"<redacted>")
            .field("statistics", &self.statistics)
            .finish()
    }
}

/// A null where a value is expected reads as the default, as Go's JSON decoding reads it.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A message of the scale set's queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueMessage {
    pub message_id: i64,
    pub message_type: String,
    /// A JSON array of [`JobMessage`]s, as a string (or "").
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub statistics: Option<Statistics>,
}

/// What every job message carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Job {
    #[serde(deserialize_with = "null_default")]
    pub runner_request_id: i64,
    #[serde(deserialize_with = "null_default")]
    pub repository_name: String,
    #[serde(deserialize_with = "null_default")]
    pub owner_name: String,
    #[serde(deserialize_with = "null_default")]
    pub job_id: String,
    #[serde(deserialize_with = "null_default")]
    pub job_workflow_ref: String,
    #[serde(deserialize_with = "null_default")]
    pub job_display_name: String,
    #[serde(deserialize_with = "null_default")]
    pub workflow_run_id: i64,
    #[serde(deserialize_with = "null_default")]
    pub event_name: String,
    #[serde(deserialize_with = "null_default")]
    pub request_labels: Vec<String>,
    pub queue_time: Option<String>,
    pub finish_time: Option<String>,
}

/// One entry of a message's body. Types sysrunner does not know are kept as `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobMessage {
    Available {
        job: Job,
        acquire_job_url: String,
    },
    Assigned {
        job: Job,
    },
    Started {
        job: Job,
        runner_id: u64,
        runner_name: String,
    },
    Completed {
        job: Job,
        result: String,
        runner_id: u64,
        runner_name: String,
    },
    Other {
        message_type: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawJobMessage {
    #[serde(default, deserialize_with = "null_default")]
    message_type: String,
    #[serde(flatten)]
    job: Job,
    #[serde(default, deserialize_with = "null_default")]
    acquire_job_url: String,
    #[serde(default, deserialize_with = "null_default")]
    runner_id: u64,
    #[serde(default, deserialize_with = "null_default")]
    runner_name: String,
    #[serde(default, deserialize_with = "null_default")]
    result: String,
}

/// The job messages in a message's `body` (a JSON array in a string; "" is none).
pub fn job_messages(body: &str) -> Result<Vec<JobMessage>, serde_json::Error> {
    if body.trim().is_empty() {
        return Ok(Vec::new());
    }
    let raw: Vec<RawJobMessage> = serde_json::from_str(body)?;
    Ok(raw
        .into_iter()
        .map(|r| match r.message_type.as_str() {
            "JobAvailable" => JobMessage::Available {
                job: r.job,
                acquire_job_url: r.acquire_job_url,
            },
            "JobAssigned" => JobMessage::Assigned { job: r.job },
            "JobStarted" => JobMessage::Started {
                job: r.job,
                runner_id: r.runner_id,
                runner_name: r.runner_name,
            },
            "JobCompleted" => JobMessage::Completed {
                job: r.job,
                result: r.result,
                runner_id: r.runner_id,
                runner_name: r.runner_name,
            },
            other => JobMessage::Other {
                message_type: other.to_string(),
            },
        })
        .collect())
}

/// An error answer of the service: `{"typeName","message"}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ErrorBody {
    pub type_name: Option<String>,
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scale_set_is_sent_as_the_service_reads_it() {
        let s = ScaleSet {
            name: "sysrunner".into(),
            runner_group_id: 1,
            labels: vec![ScaleSetLabel {
                kind: "System".into(),
                name: "sysrunner".into(),
            }],
            runner_setting: RunnerSetting {
                disable_update: true,
            },
            ..ScaleSet::default()
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "name": "sysrunner",
                "runnerGroupId": 1,
                "labels": [{"type": "System", "name": "sysrunner"}],
                "RunnerSetting": {"disableUpdate": true}
            })
        );
        let back: ScaleSet = serde_json::from_value(serde_json::json!({
            "id": 7, "name": "sysrunner", "runnerGroupId": 1, "runnerGroupName": "Default",
            "labels": [], "RunnerSetting": {"disableUpdate": true},
            "createdOn": "2026-12-02T10:00:00Z", "statistics": {"totalAssignedJobs": 2}
        }))
        .unwrap();
        assert_eq!(back.id, 7);
        assert_eq!(back.statistics.unwrap().total_assigned_jobs, 2);
    }

    #[test]
    fn a_body_holds_job_messages_of_every_kind_in_a_string() {
        let body = r#"[
          {"messageType":"JobAvailable","runnerRequestId":11,"jobId":"a1","requestLabels":["sysrunner"],
           "acquireJobUrl":"https://x/acquire","repositoryName":"r","ownerName":"o","queueTime":"2026-12-02T10:00:00Z"},
          {"messageType":"JobAssigned","runnerRequestId":11,"jobId":"a1"},
          {"messageType":"JobStarted","runnerRequestId":11,"jobId":"a1","runnerId":5,"runnerName":"runner-1"},
          {"messageType":"JobCompleted","runnerRequestId":11,"jobId":"a1","result":"succeeded","runnerId":5,"runnerName":"runner-1","finishTime":null,"jobWorkflowRef":null,"eventName":null},
          {"messageType":"SomethingNew"}
        ]"#;
        let m = job_messages(body).unwrap();
        assert_eq!(m.len(), 5);
        match &m[0] {
            JobMessage::Available {
                job,
                acquire_job_url,
            } => {
                assert_eq!(job.runner_request_id, 11);
                assert_eq!(job.job_id, "a1");
                assert_eq!(job.request_labels, vec!["sysrunner"]);
                assert_eq!(acquire_job_url, "https://x/acquire");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&m[2], JobMessage::Started { runner_id: 5, runner_name, .. } if runner_name == "runner-1")
        );
        assert!(matches!(&m[3], JobMessage::Completed { result, .. } if result == "succeeded"));
        assert_eq!(
            m[4],
            JobMessage::Other {
                message_type: "SomethingNew".into()
            }
        );
        assert!(job_messages("").unwrap().is_empty());
        assert!(job_messages("{").is_err());
    }
}
