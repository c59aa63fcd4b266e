//! The fake's runner scale set API over real HTTP on loopback, with plain reqwest calls written
//! here (not the product's client): the auth chain (registration token, runner-registration,
//! admin token), scale sets, sessions, the message queue, acquiring a job, a JIT runner taking it
//! through the runner's side, token expiry and faults. Every test ends by checking the REST
//! answers against `runners-openapi.json` (the Actions service is outside that description).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use sysrunner_testkit::fake_github::{
    ALL_GRANTS_PAT, ControlClient, FakeConfig, FakeGitHub, Fault, FaultRule, JobResult, JobSpec,
    JobStatus, Outcome, RunJob,
};
use sysrunner_testkit::openapi;

const API_VERSION: &str = "api-version=6.0-preview";
const SETS: &str = "_apis/runtime/runnerscalesets";

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Resp {
    fn type_name(&self) -> &str {
        self.body["typeName"].as_str().unwrap_or("")
    }
}

async fn into_resp(resp: reqwest::Response) -> Resp {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes));
        })
    };
    Resp {
        status,
        headers,
        body,
    }
}

/// A client of the fake as actions/scaleset would be one, by hand.
struct Ss {
    fake: FakeGitHub,
    http: reqwest::Client,
    ctl: ControlClient,
    /// The Actions-service URL and admin token of the last registration.
    service: String,
    admin: String,
}

impl Ss {
    async fn start(cfg: FakeConfig) -> Ss {
        let fake = FakeGitHub::start(cfg).await.expect("the fake starts");
        let ctl = fake.control();
        let mut ss = Ss {
            fake,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            ctl,
            service: String::new(),
            admin: String::new(),
        };
        let r = ss.register("octo-org").await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        ss
    }

    /// A registration token for `orgs/<org>` (REST, PAT), as `getRunnerRegistrationToken` asks.
    async fn registration_token(&self, org: &str) -> String {
        let r = into_resp(
            self.http
                .post(format!(
                    "{}/orgs/{org}/actions/runners/registration-token",
                    self.fake.api_url()
                ))
                .header("user-agent", "scaleset-tests")
                .header("content-type", "application/vnd.github.v3+json")
                .bearer_auth(ALL_GRANTS_PAT)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 201);
        r.body["token"].as_str().unwrap().to_string()
    }

    async fn runner_registration(&self, remote_auth: &str, config_url: &str) -> Resp {
        into_resp(
            self.http
                .post(format!(
                    "{}/actions/runner-registration",
                    self.fake.api_url()
                ))
                .header("user-agent", "scaleset-tests")
                .header("authorization", format!("RemoteAuth {remote_auth}"))
                .json(&json!({"url": config_url, "runner_event": "register"}))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// The whole chain: a registration token, then the admin connection, kept for `svc`.
    async fn register(&mut self, org: &str) -> Resp {
        let token = self.registration_token(org).await;
        let r = self
            .runner_registration(&token, &format!("{}/{org}", self.fake.web_url()))
            .await;
        if r.status == 201 {
            self.service = r.body["url"].as_str().unwrap().to_string();
            self.admin = r.body["token"].as_str().unwrap().to_string();
        }
        r
    }

    /// An Actions-service call with the admin token and `api-version`.
    async fn svc(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.svc_as(&self.admin, method, path, body).await
    }

    async fn svc_as(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> Resp {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut req = self
            .http
            .request(method, format!("{}{path}{sep}{API_VERSION}", self.service))
            .header("user-agent", r#"{"kind":"scaleset"}"#)
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        into_resp(req.send().await.expect("the fake answers")).await
    }

    async fn create_scale_set(&self, name: &str, labels: &[&str]) -> Value {
        let labels: Vec<Value> = labels
            .iter()
            .map(|l| json!({"name": l, "type": "System"}))
            .collect();
        let r = self
            .svc(
                Method::POST,
                SETS,
                Some(json!({
                    "name": name,
                    "runnerGroupId": 1,
                    "labels": labels,
                    "RunnerSetting": {"disableUpdate": true},
                    "createdOn": "0001-01-01T00:00:00Z",
                })),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body
    }

    async fn create_session(&self, ss_id: u64) -> Resp {
        self.svc(
            Method::POST,
            &format!("{SETS}/{ss_id}/sessions"),
            Some(json!({
                "sessionId": "00000000-0000-0000-0000-000000000000",
                "ownerName": "scaleset-tests",
            })),
        )
        .await
    }

    /// GET on the session's queue, as `getMessage` sends it.
    async fn get_message(&self, session: &Value, last: u64) -> Resp {
        self.get_message_with(
            session["messageQueueUrl"].as_str().unwrap(),
            session["messageQueueAccessToken"].as_str().unwrap(),
            last,
            Some("5"),
        )
        .await
    }

    async fn get_message_with(
        &self,
        queue: &str,
        token: &str,
        last: u64,
        capacity: Option<&str>,
    ) -> Resp {
        let mut url = url::Url::parse(queue).unwrap();
        if last > 0 {
            url.query_pairs_mut()
                .append_pair("lastMessageId", &last.to_string());
        }
        let mut req = self
            .http
            .get(url)
            .header("accept", "application/json; api-version=6.0-preview")
            .bearer_auth(token);
        if let Some(c) = capacity {
            req = req.header("x-scalesetmaxcapacity", c);
        }
        into_resp(req.send().await.expect("the fake answers")).await
    }

    /// DELETE of a message: its id goes on the path, the queue URL's query stays.
    async fn delete_message(&self, session: &Value, id: u64) -> u16 {
        let mut url = url::Url::parse(session["messageQueueUrl"].as_str().unwrap()).unwrap();
        let path = format!("{}/{id}", url.path());
        url.set_path(&path);
        self.http
            .delete(url)
            .bearer_auth(session["messageQueueAccessToken"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn acquire(&self, session: &Value, ss_id: u64, ids: &[u64]) -> Resp {
        let token = session["messageQueueAccessToken"].as_str().unwrap();
        self.svc_as(
            token,
            Method::POST,
            &format!("{SETS}/{ss_id}/acquirejobs"),
            Some(json!(ids)),
        )
        .await
    }

    /// The next message's job events (the `body` string parsed), its id and statistics.
    async fn next_events(&self, session: &Value, last: u64) -> (u64, Vec<Value>, Value) {
        let m = self.get_message(session, last).await;
        assert_eq!(m.status, 200, "a message is waiting: {:?}", m.body);
        assert_eq!(m.body["messageType"], "RunnerScaleSetJobMessages");
        let events: Vec<Value> =
            serde_json::from_str(m.body["body"].as_str().expect("body is a string")).unwrap();
        (
            m.body["messageId"].as_u64().unwrap(),
            events,
            m.body["statistics"].clone(),
        )
    }

    async fn runner(&self, method: Method, path: &str, secret: &str, body: Option<Value>) -> Resp {
        let mut req = self
            .http
            .request(
                method,
                format!("{}/_fake/runner/{path}", self.fake.web_url()),
            )
            .bearer_auth(secret);
        if let Some(b) = body {
            req = req.json(&b);
        }
        into_resp(req.send().await.unwrap()).await
    }

    async fn rest_runners(&self) -> Value {
        let r = into_resp(
            self.http
                .get(format!(
                    "{}/orgs/octo-org/actions/runners",
                    self.fake.api_url()
                ))
                .header("user-agent", "scaleset-tests")
                .bearer_auth(ALL_GRANTS_PAT)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200);
        r.body
    }

    /// Every REST answer conforms to the description (runner-registration as its one exception).
    async fn finish(self) {
        let records = self.ctl.requests().await.unwrap();
        let registration = records
            .iter()
            .find(|r| {
                r.api_path.as_deref() == Some("/actions/runner-registration")
                    && r.status == Some(201)
            })
            .expect("the exception was exercised");
        if let Some(api) = openapi::load() {
            api.assert_conforms(&records);
            // The exception is that one path: the same answer elsewhere is still a departure.
            let mut elsewhere = registration.clone();
            elsewhere.api_path = Some("/actions/runner-registrations".into());
            assert!(!api.check_record(&elsewhere).is_empty());
            let mut empty = registration.clone();
            empty.response_body = Some(json!({"url": "", "token": "x"}));
            assert!(!api.check_record(&empty).is_empty());
        }
    }
}

fn quick() -> FakeConfig {
    FakeConfig {
        actions_message_wait_millis: 500,
        ..FakeConfig::default()
    }
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["messageType"].as_str().unwrap())
        .collect()
}

/// The fake runner's secret from a scale set's `encodedJITConfig`.
fn jit_secret(encoded: &str) -> (String, Value) {
    let outer: Value = serde_json::from_slice(&B64.decode(encoded).unwrap()).unwrap();
    let file = |k: &str| -> Value {
        serde_json::from_slice(&B64.decode(outer[k].as_str().unwrap()).unwrap()).unwrap()
    };
    let secret = file(".credentials_rsaparams")["fakeRunnerSecret"]
        .as_str()
        .unwrap()
        .to_string();
    (secret, file(".runner"))
}

#[tokio::test]
async fn a_job_goes_from_the_queue_through_a_jit_runner_of_the_scale_set() {
    let ss = Ss::start(quick()).await;

    // The admin connection: the scope's Actions-service URL and a JWT with a known alg and exp.
    assert_eq!(ss.service, ss.fake.actions_url("orgs/octo-org"));
    assert!(ss.service.ends_with('/'));
    let parts: Vec<&str> = ss.admin.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&B64URL.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&B64URL.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(header["alg"], "HS256");
    let now = ss.ctl.info().await.unwrap().now;
    assert!((now + 590..=now + 610).contains(&claims["exp"].as_i64().unwrap()));
    assert_eq!(claims["scope"], "orgs/octo-org");
    assert_eq!(
        ss.runner_registration("NOPE", &format!("{}/octo-org", ss.fake.web_url()))
            .await
            .status,
        401
    );
    let repo_token = ss.registration_token("octo-org").await;
    let r = ss
        .runner_registration(
            &repo_token,
            &format!("{}/octo-org/octo-repo", ss.fake.web_url()),
        )
        .await;
    assert_eq!(r.status, 403, "a token of another scope");
    // The admin token is good for its own scope only.
    let other = format!(
        "{}/_actions/repos/octo-org/octo-repo/{SETS}?{API_VERSION}",
        ss.fake.web_url()
    );
    let r = into_resp(
        ss.http
            .get(other)
            .bearer_auth(&ss.admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((r.status, r.type_name()), (401, "VssUnauthorizedException"));
    let r = into_resp(
        ss.http
            .get(format!("{}{SETS}", ss.service))
            .bearer_auth(&ss.admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 400, "api-version is required");

    // Runner group, scale set by name (none yet), create, duplicate, by name, by id, update.
    let g = ss
        .svc(
            Method::GET,
            "_apis/runtime/runnergroups/?groupName=Default",
            None,
        )
        .await;
    assert_eq!(g.status, 200);
    assert_eq!(g.body["count"], 1);
    assert_eq!(
        (
            &g.body["value"][0]["id"],
            &g.body["value"][0]["isDefaultGroup"]
        ),
        (&json!(1), &json!(true))
    );
    let none = ss
        .svc(
            Method::GET,
            &format!("{SETS}?runnerGroupId=1&name=arc"),
            None,
        )
        .await;
    assert_eq!((none.status, &none.body["count"]), (200, &json!(0)));
    let set = ss.create_scale_set("arc", &["arc"]).await;
    let id = set["id"].as_u64().unwrap();
    assert_eq!(set["runnerGroupName"], "Default");
    assert_eq!(set["RunnerSetting"]["disableUpdate"], true);
    assert_eq!(set["statistics"]["totalAssignedJobs"], 0);
    let dup = ss
        .svc(
            Method::POST,
            SETS,
            Some(json!({"name": "ARC", "runnerGroupId": 1})),
        )
        .await;
    assert_eq!(
        (dup.status, dup.type_name()),
        (409, "RunnerScaleSetExistsException")
    );
    let found = ss
        .svc(
            Method::GET,
            &format!("{SETS}?runnerGroupId=1&name=arc"),
            None,
        )
        .await;
    assert_eq!(
        (
            found.body["count"].as_u64(),
            found.body["value"][0]["id"].as_u64()
        ),
        (Some(1), Some(id))
    );
    assert_eq!(
        ss.svc(Method::GET, &format!("{SETS}/{id}"), None)
            .await
            .body["name"],
        "arc"
    );
    let upd = ss
        .svc(
            Method::PATCH,
            &format!("{SETS}/{id}"),
            Some(json!({"labels": [{"name": "arc"}, {"name": "linux", "type": ""}]})),
        )
        .await;
    assert_eq!(upd.status, 200);
    assert_eq!(
        upd.body["labels"],
        json!([{"type": "System", "name": "arc"}, {"type": "System", "name": "linux"}])
    );
    assert_eq!(upd.body["name"], "arc", "a partial update keeps the rest");

    // One live session per scale set.
    let s = ss.create_session(id).await;
    assert_eq!(s.status, 200, "{:?}", s.body);
    let session = s.body;
    let sid = session["sessionId"].as_str().unwrap().to_string();
    assert_ne!(sid, "00000000-0000-0000-0000-000000000000");
    assert_eq!(sid.len(), 36);
    assert_eq!(session["ownerName"], "scaleset-tests");
    assert_eq!(session["runnerScaleSet"]["id"], id);
    assert!(session["statistics"].is_object());
    let again = ss.create_session(id).await;
    assert_eq!(
        (again.status, again.type_name()),
        (409, "RunnerScaleSetSessionConflictException")
    );
    assert!(
        again.body["message"]
            .as_str()
            .unwrap()
            .contains("already has an active session")
    );

    // An empty queue answers 202 after the configured wait; the capacity header is required.
    let t0 = Instant::now();
    assert_eq!(ss.get_message(&session, 0).await.status, 202);
    assert!(t0.elapsed() >= Duration::from_millis(450));
    let queue = session["messageQueueUrl"].as_str().unwrap();
    let token = session["messageQueueAccessToken"].as_str().unwrap();
    assert_eq!(ss.get_message_with(queue, token, 0, None).await.status, 400);
    assert_eq!(
        ss.get_message_with(queue, &ss.admin, 0, Some("5"))
            .await
            .status,
        401
    );

    // A job for the scale set's labels: JobAvailable, woken out of a waiting poll.
    let waiting = {
        let (http, queue, token) = (ss.http.clone(), queue.to_string(), token.to_string());
        tokio::spawn(async move {
            let t = Instant::now();
            let r = http
                .get(queue)
                .bearer_auth(token)
                .header("x-scalesetmaxcapacity", "3")
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let job = ss
        .ctl
        .queue_job(&JobSpec {
            name: "build".into(),
            steps: vec!["echo hi".into()],
            labels: vec!["ARC".into(), "linux".into()],
            ..JobSpec::default()
        })
        .await
        .unwrap();
    let (status, took) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert!(
        took < Duration::from_millis(400),
        "woken early, not at the deadline: {took:?}"
    );
    let rid = job
        .runner_request_id
        .expect("a scale set's job has a runnerRequestId");
    let (m1, events, stats) = ss.next_events(&session, 0).await;
    assert_eq!(kinds(&events), ["JobAvailable"]);
    let e = &events[0];
    assert_eq!(e["runnerRequestId"], rid);
    assert_eq!(e["jobId"], json!(job.id.to_string()));
    assert_eq!(e["jobDisplayName"], "build");
    assert_eq!(e["requestLabels"], json!(["ARC", "linux"]));
    assert_eq!(
        (e["ownerName"].as_str(), e["repositoryName"].as_str()),
        (Some("octo-org"), Some("octo-repo"))
    );
    assert_eq!(
        e["acquireJobUrl"],
        json!(format!("{}{SETS}/{id}/acquirejobs", ss.service))
    );
    assert!(e["queueTime"].as_str().unwrap().ends_with('Z'));
    assert!(e["workflowRunId"].is_u64());
    assert_eq!(stats["totalAvailableJobs"], 1);
    assert_eq!(stats["totalAssignedJobs"], 0);
    // Unacked, it comes again; acked, it is gone.
    assert_eq!(ss.next_events(&session, 0).await.0, m1);
    assert_eq!(ss.delete_message(&session, m1).await, 204);
    assert_eq!(ss.get_message(&session, m1).await.status, 202);

    // Acquire: only the ids it could get; JobAssigned, and the statistics follow.
    let acq = ss.acquire(&session, id, &[rid, 987_654]).await;
    assert_eq!(acq.status, 200, "{:?}", acq.body);
    assert_eq!(acq.body, json!({"count": 1, "value": [rid]}));
    let (m2, events, stats) = ss.next_events(&session, m1).await;
    assert_eq!(kinds(&events), ["JobAssigned"]);
    assert!(events[0]["scaleSetAssignTime"].is_string());
    assert_eq!(
        (
            stats["totalAvailableJobs"].as_u64(),
            stats["totalAcquiredJobs"].as_u64(),
            stats["totalAssignedJobs"].as_u64()
        ),
        (Some(0), Some(1), Some(1))
    );
    assert_eq!(ss.delete_message(&session, m2).await, 204);

    // A JIT config of the scale set: a runner in the org's REST listing, as GitHub lists them.
    let jit = ss
        .svc(
            Method::POST,
            &format!("{SETS}/{id}/generatejitconfig"),
            Some(json!({"name": "runner-0a1b2c3d", "workFolder": ""})),
        )
        .await;
    assert_eq!(jit.status, 200, "{:?}", jit.body);
    assert_eq!(jit.body["runner"]["runnerScaleSetId"], id);
    let runner_id = jit.body["runner"]["id"].as_u64().unwrap();
    let taken = ss
        .svc(
            Method::POST,
            &format!("{SETS}/{id}/generatejitconfig"),
            Some(json!({"name": "RUNNER-0a1b2c3d", "workFolder": ""})),
        )
        .await;
    assert_eq!(
        (taken.status, taken.type_name()),
        (409, "AgentExistsException")
    );
    let listed = ss.rest_runners().await;
    assert_eq!(listed["total_count"], 1);
    let r = &listed["runners"][0];
    assert_eq!(
        (
            r["id"].as_u64(),
            r["name"].as_str(),
            r["ephemeral"].as_bool(),
            r["status"].as_str()
        ),
        (
            Some(runner_id),
            Some("runner-0a1b2c3d"),
            Some(true),
            Some("offline")
        )
    );
    let names: Vec<&str> = r["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["arc", "linux"]);
    let agents = ss
        .svc(
            Method::GET,
            "_apis/distributedtask/pools/0/agents?agentName=runner-0a1b2c3d",
            None,
        )
        .await;
    assert_eq!(
        (
            agents.body["count"].as_u64(),
            agents.body["value"][0]["runnerScaleSetId"].as_u64()
        ),
        (Some(1), Some(id))
    );

    // The runner takes the job through the runner's side: JobStarted, then JobCompleted.
    let (secret, dot_runner) = jit_secret(jit.body["encodedJITConfig"].as_str().unwrap());
    assert_eq!(dot_runner["agentId"], runner_id);
    let open = ss
        .runner(
            Method::POST,
            "session",
            &secret,
            Some(json!({"version": "2.336.0"})),
        )
        .await;
    assert_eq!(open.status, 200);
    let rsession = open.body["session_id"].as_str().unwrap().to_string();
    let next = ss
        .runner(
            Method::GET,
            &format!("jobs/next?session={rsession}&wait_secs=5"),
            &secret,
            None,
        )
        .await;
    assert_eq!((next.status, next.body["id"].as_u64()), (200, Some(job.id)));
    assert_eq!(
        ss.runner(
            Method::POST,
            &format!("jobs/{}/start", job.id),
            &secret,
            None
        )
        .await
        .status,
        204
    );
    let busy = ss
        .svc(
            Method::DELETE,
            &format!("_apis/distributedtask/pools/0/agents/{runner_id}"),
            None,
        )
        .await;
    assert_eq!(
        (busy.status, busy.type_name()),
        (409, "JobStillRunningException")
    );
    let (m3, events, stats) = ss.next_events(&session, m2).await;
    assert_eq!(kinds(&events), ["JobStarted"]);
    assert_eq!(
        (
            events[0]["runnerId"].as_u64(),
            events[0]["runnerName"].as_str()
        ),
        (Some(runner_id), Some("runner-0a1b2c3d"))
    );
    assert_eq!(
        (
            stats["totalRunningJobs"].as_u64(),
            stats["totalAssignedJobs"].as_u64(),
            stats["totalBusyRunners"].as_u64(),
            stats["totalIdleRunners"].as_u64(),
            stats["totalRegisteredRunners"].as_u64()
        ),
        (Some(1), Some(1), Some(1), Some(0), Some(1))
    );
    assert_eq!(ss.delete_message(&session, m3).await, 204);
    let done = ss
        .runner(
            Method::POST,
            &format!("jobs/{}/complete", job.id),
            &secret,
            Some(json!({"result": "Succeeded", "output": "hi\n"})),
        )
        .await;
    assert_eq!(done.status, 204);
    let (m4, events, stats) = ss.next_events(&session, m3).await;
    assert_eq!(kinds(&events), ["JobCompleted"]);
    assert_eq!(
        (
            events[0]["result"].as_str(),
            events[0]["runnerName"].as_str()
        ),
        (Some("succeeded"), Some("runner-0a1b2c3d"))
    );
    assert!(events[0]["finishTime"].is_string());
    for k in [
        "totalAvailableJobs",
        "totalAcquiredJobs",
        "totalAssignedJobs",
        "totalRunningJobs",
        "totalRegisteredRunners",
        "totalBusyRunners",
        "totalIdleRunners",
    ] {
        assert_eq!(stats[k], 0, "{k} after the job: {stats}");
    }
    assert_eq!(ss.delete_message(&session, m4).await, 204);
    assert_eq!(
        ss.ctl.job(job.id).await.unwrap().status,
        JobStatus::Completed
    );
    assert_eq!(
        ss.rest_runners().await["total_count"],
        0,
        "ephemeral: gone with its job"
    );
    let gone = ss
        .svc(
            Method::GET,
            &format!("_apis/distributedtask/pools/0/agents/{runner_id}"),
            None,
        )
        .await;
    assert_eq!(
        (gone.status, gone.type_name()),
        (404, "AgentNotFoundException")
    );

    // Refresh: the full session with a new queue token; the old one is refused.
    let refreshed = ss
        .svc(Method::PATCH, &format!("{SETS}/{id}/sessions/{sid}"), None)
        .await;
    assert_eq!(refreshed.status, 200);
    let fresh = refreshed.body;
    assert_eq!(fresh["sessionId"], json!(sid));
    assert_eq!(fresh["messageQueueUrl"], session["messageQueueUrl"]);
    assert_ne!(
        fresh["messageQueueAccessToken"],
        session["messageQueueAccessToken"]
    );
    assert_eq!(ss.get_message(&session, m4).await.status, 401);
    assert_eq!(ss.acquire(&session, id, &[rid]).await.status, 401);
    assert_eq!(ss.get_message(&fresh, m4).await.status, 202);

    // Close and delete.
    assert_eq!(
        ss.svc(Method::DELETE, &format!("{SETS}/{id}/sessions/{sid}"), None)
            .await
            .status,
        204
    );
    assert_eq!(
        ss.svc(Method::DELETE, &format!("{SETS}/{id}/sessions/{sid}"), None)
            .await
            .status,
        404
    );
    assert_eq!(
        ss.create_session(id).await.status,
        200,
        "a new session once the old is gone"
    );
    assert_eq!(
        ss.svc(Method::DELETE, &format!("{SETS}/{id}"), None)
            .await
            .status,
        204
    );
    let missing = ss.svc(Method::GET, &format!("{SETS}/{id}"), None).await;
    assert_eq!(missing.status, 404);
    assert!(ss.ctl.scale_sets().await.unwrap().is_empty());
    ss.finish().await;
}

#[tokio::test]
async fn tokens_and_sessions_expire_on_the_fakes_clock() {
    let mut ss = Ss::start(FakeConfig {
        actions_admin_token_ttl_secs: 120,
        actions_queue_token_ttl_secs: 100,
        actions_session_idle_secs: 150,
        ..quick()
    })
    .await;
    let id = ss.create_scale_set("exp", &[]).await["id"]
        .as_u64()
        .unwrap();
    let session = ss.create_session(id).await.body;
    let sid = session["sessionId"].as_str().unwrap().to_string();

    // The queue token expires first: 401, and a refresh gives one that works.
    ss.ctl.advance_clock(101).await.unwrap();
    assert_eq!(ss.get_message(&session, 0).await.status, 401);
    let fresh = ss
        .svc(Method::PATCH, &format!("{SETS}/{id}/sessions/{sid}"), None)
        .await;
    assert_eq!(fresh.status, 200);
    assert_eq!(ss.get_message(&fresh.body, 0).await.status, 202);

    // The admin token expires: 401 until the chain runs again.
    ss.ctl.advance_clock(20).await.unwrap();
    let r = ss.svc(Method::GET, &format!("{SETS}/{id}"), None).await;
    assert_eq!((r.status, r.type_name()), (401, "VssUnauthorizedException"));
    assert_eq!(ss.register("octo-org").await.status, 201);
    assert_eq!(
        ss.svc(Method::GET, &format!("{SETS}/{id}"), None)
            .await
            .status,
        200
    );

    // A session nobody polls expires: deleting it is 400, and a new one may be made.
    ss.ctl.advance_clock(151).await.unwrap();
    assert_eq!(ss.register("octo-org").await.status, 201);
    let del = ss
        .svc(Method::DELETE, &format!("{SETS}/{id}/sessions/{sid}"), None)
        .await;
    assert_eq!(
        (del.status, del.type_name()),
        (400, "RunnerScaleSetSessionExpiredException")
    );
    assert_eq!(ss.create_session(id).await.status, 200);
    let listed = ss.ctl.scale_sets().await.unwrap();
    assert_eq!(
        listed[0].labels,
        ["exp"],
        "a scale set without labels carries its name"
    );
    assert!(listed[0].session.as_ref().unwrap().live);
    ss.finish().await;
}

#[tokio::test]
async fn faults_apply_to_the_actions_service_as_to_rest() {
    let ss = Ss::start(quick()).await;
    let fault = ss
        .ctl
        .add_fault(&FaultRule {
            method: "POST".into(),
            path: "*/_apis/runtime/runnerscalesets".into(),
            count: 1,
            fault: Fault::ServerError { status: 503 },
        })
        .await
        .unwrap();
    let r = ss.svc(Method::POST, SETS, Some(json!({"name": "f"}))).await;
    assert_eq!((r.status, r.type_name()), (503, "InjectedFaultException"));
    assert!(
        ss.ctl.scale_sets().await.unwrap().is_empty(),
        "nothing happened"
    );
    let id = ss.create_scale_set("f", &[]).await["id"].as_u64().unwrap();

    ss.ctl
        .add_fault(&FaultRule {
            method: "GET".into(),
            path: "*/messages".into(),
            count: 1,
            fault: Fault::TooManyRequests {
                retry_after_secs: 7,
            },
        })
        .await
        .unwrap();
    let session = ss.create_session(id).await.body;
    let limited = ss.get_message(&session, 0).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.headers.get("retry-after").unwrap(), "7");

    // Dropped after the effect: the runner exists though the client saw no answer.
    ss.ctl
        .add_fault(&FaultRule {
            method: "POST".into(),
            path: "*/generatejitconfig".into(),
            count: 1,
            fault: Fault::DropAfterEffect,
        })
        .await
        .unwrap();
    let sent = ss
        .http
        .post(format!(
            "{}{SETS}/{id}/generatejitconfig?{API_VERSION}",
            ss.service
        ))
        .bearer_auth(&ss.admin)
        .json(&json!({"name": "runner-x", "workFolder": ""}))
        .send()
        .await;
    assert!(sent.is_err(), "no answer");
    let retry = ss
        .svc(
            Method::POST,
            &format!("{SETS}/{id}/generatejitconfig"),
            Some(json!({"name": "runner-x", "workFolder": ""})),
        )
        .await;
    assert_eq!(
        (retry.status, retry.type_name()),
        (409, "AgentExistsException")
    );
    let by_name = ss
        .svc(
            Method::GET,
            "_apis/distributedtask/pools/0/agents?agentName=runner-x",
            None,
        )
        .await;
    assert_eq!(by_name.body["count"], 1);

    let log = ss.ctl.requests().await.unwrap();
    let faulted: Vec<_> = log.iter().filter(|r| r.fault.is_some()).collect();
    assert_eq!(faulted.len(), 3);
    assert_eq!(faulted[0].fault, Some(fault));
    assert_eq!(faulted[2].outcome, Outcome::Dropped);
    assert!(
        faulted
            .iter()
            .all(|r| r.api_path.is_none() && r.path.starts_with("/_actions/"))
    );
    assert_eq!(
        faulted[0]
            .request_headers
            .get("authorization")
            .map(String::as_str),
        Some("Bearer <admin-token>")
    );
    ss.finish().await;
}

#[tokio::test]
async fn scale_sets_with_the_same_labels_share_jobs_and_the_control_api_runs_one() {
    let ss = Ss::start(quick()).await;
    let a = ss.create_scale_set("a", &["gpu"]).await["id"]
        .as_u64()
        .unwrap();
    let b = ss.create_scale_set("b", &["gpu"]).await["id"]
        .as_u64()
        .unwrap();
    let (sa, sb) = (
        ss.create_session(a).await.body,
        ss.create_session(b).await.body,
    );
    let job = ss
        .ctl
        .queue_job(&JobSpec {
            name: "train".into(),
            labels: vec!["gpu".into()],
            scope: Some("orgs/octo-org".into()),
            ..JobSpec::default()
        })
        .await
        .unwrap();
    let rid = job.runner_request_id.unwrap();
    let (ma, ea, _) = ss.next_events(&sa, 0).await;
    let (mb, eb, _) = ss.next_events(&sb, 0).await;
    assert_eq!(
        (kinds(&ea), kinds(&eb)),
        (vec!["JobAvailable"], vec!["JobAvailable"])
    );
    assert_eq!(
        ss.acquire(&sb, b, &[rid]).await.body,
        json!({"count": 1, "value": [rid]})
    );
    assert_eq!(
        ss.acquire(&sa, a, &[rid]).await.body,
        json!({"count": 0, "value": []})
    );
    assert_eq!(ss.ctl.job(job.id).await.unwrap().scale_set_id, Some(b));

    let jit = ss
        .svc(
            Method::POST,
            &format!("{SETS}/{b}/generatejitconfig"),
            Some(json!({"name": "b-1", "workFolder": ""})),
        )
        .await;
    let runner_id = jit.body["runner"]["id"].as_u64().unwrap();
    let ran = ss
        .ctl
        .run_job(
            runner_id,
            &RunJob {
                result: JobResult::Failed,
                output: String::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!((ran.id, ran.result), (job.id, Some(JobResult::Failed)));
    let (_, events, stats) = ss.next_events(&sb, mb).await;
    assert_eq!(
        kinds(&events),
        ["JobAssigned", "JobStarted", "JobCompleted"]
    );
    assert_eq!(events[2]["result"], "failed");
    assert_eq!(stats["totalAssignedJobs"], 0);
    assert_eq!(
        ss.get_message(&sa, ma).await.status,
        202,
        "the other scale set hears nothing more"
    );
    let listed = ss.ctl.scale_sets().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|s| s.last_max_capacity)
            .collect::<Vec<_>>(),
        [Some(5), Some(5)]
    );
    ss.finish().await;
}
