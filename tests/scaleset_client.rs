//! sysrunner's runner scale set client (`sysrunner::scaleset`) against the fake's Actions service
//! over real HTTP on loopback: a whole cycle (scale set → session → job available → acquire → JIT
//! → the kit's fake actions/runner takes the job with that JIT config → started → completed →
//! messages deleted → scale set deleted), every fault once, the
//! 409 session recovery and both tokens' expiry. The fake shares no types with the client: what
//! they agree on is SCALESET.md. Every REST answer is checked against runners-openapi.json.

mod clock_support;

use clock_support::TestTime;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use sysrunner::config::{Auth, Scope};
use sysrunner::github::{Client, ClientOptions};
use sysrunner::scaleset::{
    ActionsClient, ConflictPolicy, JobMessage, MessageSession, Options, ScaleSet, ScalesetError,
    job_messages,
};
use sysrunner::secret::Secret;
use sysrunner_testkit::fake_github::{
    ALL_GRANTS_PAT, FakeConfig, FakeGitHub, Fault, FaultRule, JobSpec,
};

const NAME: &str = "sysrunner-ci";
/// The fake's queue token lives this long (its clock), so a test can outlive it.
const QUEUE_TOKEN_SECS: u64 = 30;

struct Env {
    fake: FakeGitHub,
    time: Arc<TestTime>,
    rest: Arc<Client>,
    client: Arc<ActionsClient>,
    dir: tempfile::TempDir,
}

fn scope() -> Scope {
    Scope::Org("octo-org".into())
}

async fn env_with(request_timeout: Duration) -> Env {
    let fake = FakeGitHub::start(FakeConfig {
        actions_queue_token_ttl_secs: QUEUE_TOKEN_SECS,
        actions_message_wait_millis: 200,
        ..FakeConfig::default()
    })
    .await
    .expect("fake GitHub starts");
    let time = TestTime::new();
    let rest = Arc::new(
        Client::new(
            fake.api_url(),
            scope(),
            Auth::Token(Secret::new(ALL_GRANTS_PAT)),
            ClientOptions {
                request_timeout: Duration::from_secs(30),
                deadline: Duration::from_secs(120),
                time: time.clone(),
            },
        )
        .unwrap(),
    );
    let client = Arc::new(
        ActionsClient::new(
            rest.clone(),
            fake.api_url(),
            fake.web_url(),
            &scope(),
            Options {
                request_timeout,
                deadline: Duration::from_secs(120),
                poll_timeout: Duration::from_secs(30),
                time: time.clone(),
            },
        )
        .unwrap(),
    );
    Env {
        fake,
        time,
        rest,
        client,
        dir: tempfile::tempdir().unwrap(),
    }
}

async fn env() -> Env {
    env_with(Duration::from_secs(30)).await
}

impl Env {
    fn store(&self) -> PathBuf {
        self.dir.path().join("session-id")
    }

    async fn scale_set(&self) -> ScaleSet {
        self.client
            .create_scale_set(ScaleSet {
                name: NAME.into(),
                runner_group_id: 1,
                runner_setting: sysrunner::scaleset::RunnerSetting {
                    disable_update: true,
                },
                ..ScaleSet::default()
            })
            .await
            .unwrap()
    }

    async fn open(
        &self,
        set: u64,
        store: Option<PathBuf>,
    ) -> Result<MessageSession, ScalesetError> {
        MessageSession::open(
            self.client.clone(),
            set,
            "host-1",
            store,
            ConflictPolicy::default(),
            &*self.time,
        )
        .await
    }

    async fn fault(&self, method: &str, path: &str, fault: Fault) {
        self.fake
            .control()
            .add_fault(&FaultRule {
                method: method.into(),
                path: path.into(),
                count: 1,
                fault,
            })
            .await
            .unwrap();
    }

    /// How many requests the fake served whose method is `method` and whose path ends with
    /// (or, with a `*` at the start, contains) `path`.
    async fn count(&self, method: &str, path: &str) -> usize {
        let log = self.fake.control().requests().await.unwrap();
        log.iter()
            .filter(|r| r.method == method)
            .filter(|r| match path.strip_prefix('*') {
                Some(p) => r.path.contains(p),
                None => r.path.split('?').next().unwrap_or("").ends_with(path),
            })
            .count()
    }

    /// Time passes, for the fake and for the client alike.
    async fn later(&self, secs: u64) {
        self.fake.control().advance_clock(secs).await.unwrap();
        self.time.advance(Duration::from_secs(secs));
    }

    async fn conforms(&self) {
        let log = self.fake.control().requests().await.unwrap();
        if let Some(doc) = sysrunner_testkit::openapi::load() {
            assert!(doc.assert_conforms(&log) > 0, "no answer was checked");
        }
    }
}

/// Polls (and deletes) messages until `done` holds for the job messages seen so far; the
/// messages' last statistics' assigned count with them.
async fn poll_until(
    s: &mut MessageSession,
    last: &mut i64,
    seen: &mut Vec<JobMessage>,
    done: impl Fn(&[JobMessage]) -> bool,
) -> i64 {
    let mut assigned = -1;
    for _ in 0..100 {
        if done(seen) {
            return assigned;
        }
        if let Some(m) = s.get_message(*last, 4).await.unwrap() {
            *last = m.message_id;
            assigned = m
                .statistics
                .as_ref()
                .map_or(-1, |st| st.total_assigned_jobs);
            seen.extend(job_messages(&m.body).unwrap());
            s.delete_message(m.message_id).await.unwrap();
        }
    }
    panic!("never saw what was awaited: {seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cycle_from_scale_set_to_completed_job() {
    let e = env().await;
    let group = e.client.runner_group("default").await.unwrap();
    assert_eq!(group.id, 1);
    assert!(e.client.scale_set_by_name(1, NAME).await.unwrap().is_none());
    let set = e.scale_set().await;
    assert!(set.id > 0);
    assert_eq!(set.labels[0].name, NAME, "its name is its label");
    assert_eq!(
        e.client
            .scale_set_by_name(1, NAME)
            .await
            .unwrap()
            .map(|s| s.id),
        Some(set.id)
    );

    let changed = e
        .client
        .update_scale_set(
            set.id,
            ScaleSet {
                labels: vec![
                    sysrunner::scaleset::ScaleSetLabel {
                        kind: String::new(),
                        name: NAME.into(),
                    },
                    sysrunner::scaleset::ScaleSetLabel {
                        kind: String::new(),
                        name: "linux".into(),
                    },
                ],
                runner_setting: sysrunner::scaleset::RunnerSetting {
                    disable_update: true,
                },
                ..ScaleSet::default()
            },
        )
        .await
        .unwrap();
    let names: Vec<&str> = changed.labels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        vec![NAME, "linux"],
        "a partial update changes the labels"
    );
    assert!(changed.labels.iter().all(|l| l.kind == "System"));
    assert_eq!(changed.name, NAME, "and keeps the rest");

    let mut s = e.open(set.id, Some(e.store())).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(e.store()).unwrap(),
        s.session().id,
        "the session's id is kept while it is open"
    );
    let job = e
        .fake
        .control()
        .queue_job(&JobSpec {
            name: "build".into(),
            steps: vec!["true".into()],
            labels: vec![NAME.into(), "Linux".into()],
            ..JobSpec::default()
        })
        .await
        .unwrap();

    let (mut last, mut seen) = (0, Vec::new());
    poll_until(&mut s, &mut last, &mut seen, |m| {
        m.iter().any(|j| matches!(j, JobMessage::Available { .. }))
    })
    .await;
    let request_id = seen
        .iter()
        .find_map(|j| match j {
            JobMessage::Available { job, .. } => Some(job.runner_request_id),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        s.acquire_jobs(&[request_id]).await.unwrap(),
        vec![request_id]
    );
    let scale_sets = e.fake.control().scale_sets().await.unwrap();
    assert_eq!(
        scale_sets[0].last_max_capacity,
        Some(4),
        "every poll says the capacity"
    );

    let jit = e.client.jit_config(set.id, "runner-0001").await.unwrap();
    assert_eq!(jit.runner.runner_scale_set_id, set.id);
    assert!(!jit.encoded.expose().is_empty());
    let listed = e.rest.list_runners(Some("runner-0001")).await.unwrap();
    assert_eq!(
        listed.len(),
        1,
        "a scale set's runner is in its scope's REST listing"
    );
    assert_eq!(
        e.client
            .runner_by_name("runner-0001")
            .await
            .unwrap()
            .map(|r| r.id),
        Some(jit.runner.id)
    );

    // The runner made from the JIT config takes the job through the runner's own protocol: the
    // kit's fake actions/runner, as `sysrunner scale` will start it in a container.
    let release = e.dir.path().join("runner");
    sysrunner_testkit::fake_runner::install(
        &release,
        &sysrunner_testkit::binaries::locate_listener().unwrap(),
    )
    .unwrap();
    let listener = tokio::process::Command::new(release.join("bin/Runner.Listener"))
        .current_dir(&release)
        .env("RUNNER_ALLOW_RUNASROOT", "1")
        .args(["run", "--jitconfig", jit.encoded.expose()])
        .output();
    let ran = tokio::time::timeout(Duration::from_secs(120), listener)
        .await
        .expect("the runner ends after its one job")
        .unwrap();
    assert_eq!(
        ran.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    let assigned = poll_until(&mut s, &mut last, &mut seen, |m| {
        m.iter().any(|j| matches!(j, JobMessage::Completed { .. }))
    })
    .await;
    let started = seen
        .iter()
        .position(|j| matches!(j, JobMessage::Started { .. }));
    let completed = seen
        .iter()
        .position(|j| matches!(j, JobMessage::Completed { .. }));
    assert!(started.is_some() && started < completed, "{seen:#?}");
    match &seen[completed.unwrap()] {
        JobMessage::Completed {
            job: j,
            result,
            runner_name,
            ..
        } => {
            assert_eq!(j.runner_request_id, request_id);
            assert_eq!(result.to_ascii_lowercase(), "succeeded");
            assert_eq!(runner_name, "runner-0001");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(assigned, 0, "nothing is assigned once the job completed");
    let done = e.fake.control().job(job.id).await.unwrap();
    assert_eq!(done.scale_set_id, Some(set.id));
    assert!(
        e.client.runner(jit.runner.id).await.unwrap().is_none(),
        "the ephemeral runner is gone"
    );

    s.close().await.unwrap();
    assert!(!e.store().exists(), "a closed session's id is forgotten");
    e.client.delete_scale_set(set.id).await.unwrap();
    assert!(e.client.scale_set_by_name(1, NAME).await.unwrap().is_none());
    assert_eq!(e.count("POST", "/actions/runner-registration").await, 1);
    e.conforms().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_is_retried_or_recovered_by_the_rules() {
    // Short requests, so that a hang costs five seconds of the test, not thirty.
    let e = env_with(Duration::from_secs(5)).await;
    let sets = "*/_apis/runtime/runnerscalesets";

    // 5xx: retried after the back-off's first second.
    e.fault("GET", sets, Fault::ServerError { status: 503 })
        .await;
    assert!(e.client.scale_set_by_name(1, NAME).await.unwrap().is_none());
    assert_eq!(e.time.sleeps(), vec![1]);

    // 429: retried after what Retry-After says.
    e.fault(
        "POST",
        sets,
        Fault::TooManyRequests {
            retry_after_secs: 7,
        },
    )
    .await;
    let set = e.scale_set().await;
    assert_eq!(e.time.sleeps(), vec![1, 7]);

    // A hang: the request times out and is sent again.
    e.fault("GET", "*/runnerscalesets/*", Fault::Hang { millis: 7000 })
        .await;
    assert_eq!(e.client.scale_set(set.id).await.unwrap().id, set.id);
    assert_eq!(e.time.sleeps(), vec![1, 7, 1]);

    // Dropped after the effect: the second try finds the name taken (409 AgentExistsException),
    // and the client removes the runner of its scale set and asks once more.
    e.fault("POST", "*/generatejitconfig", Fault::DropAfterEffect)
        .await;
    let jit = e.client.jit_config(set.id, "runner-0002").await.unwrap();
    assert_eq!(jit.runner.name, "runner-0002");
    assert_eq!(e.count("POST", "/generatejitconfig").await, 3);
    assert_eq!(e.count("DELETE", "*/agents/").await, 1);
    let runners = e.rest.list_runners(Some("runner-0002")).await.unwrap();
    assert_eq!(runners.len(), 1, "one runner of that name is left");

    // 501 is an answer, not a server error worth waiting for (GitHub's client does the same).
    e.fault(
        "DELETE",
        "*/runnerscalesets/*",
        Fault::ServerError { status: 501 },
    )
    .await;
    let err = e.client.delete_scale_set(set.id).await.unwrap_err();
    assert_eq!(err.status(), Some(501), "{err}");
    assert_eq!(
        e.time.sleeps(),
        vec![1, 7, 1, 1],
        "only the JIT retry slept since"
    );

    // The queue: a 429 on a poll waits as told, then the poll answers.
    let mut s = e.open(set.id, None).await.unwrap();
    e.fault(
        "GET",
        "*/messages",
        Fault::TooManyRequests {
            retry_after_secs: 5,
        },
    )
    .await;
    assert!(
        s.get_message(0, 1).await.unwrap().is_none(),
        "an empty queue: 202"
    );
    assert_eq!(*e.time.sleeps().last().unwrap(), 5);
    s.close().await.unwrap();
    e.client.delete_scale_set(set.id).await.unwrap();
    e.conforms().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_an_earlier_run_left_is_deleted_and_a_live_one_is_waited_out() {
    let e = env().await;
    let set = e.scale_set().await;

    // An earlier run, killed: its session stays at the service and its id in the store.
    let killed = e.open(set.id, Some(e.store())).await.unwrap();
    let old = killed.session().id.clone();
    drop(killed);
    let next = e.open(set.id, Some(e.store())).await.unwrap();
    assert_ne!(next.session().id, old);
    assert_eq!(e.count("DELETE", &format!("/sessions/{old}")).await, 1);

    // Without a store, another live session is waited out within bounds, then named.
    let policy = ConflictPolicy {
        every: Duration::from_secs(30),
        attempts: 3,
    };
    let err = MessageSession::open(e.client.clone(), set.id, "host-2", None, policy, &*e.time)
        .await
        .err()
        .expect("a second live session is refused");
    match &err {
        ScalesetError::SessionConflict {
            attempts, waited, ..
        } => {
            assert_eq!(*attempts, 3);
            assert_eq!(*waited, Duration::from_secs(60));
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("Stop the other one"), "{err}");
    assert_eq!(e.count("POST", "/sessions").await, 2 + 3);

    // A kept id whose session expired meanwhile (400) or is unknown (404) counts as deleted.
    let expired = next.session().id.clone();
    drop(next);
    e.later(301).await;
    std::fs::write(e.store(), &expired).unwrap();
    let fresh = e.open(set.id, Some(e.store())).await.unwrap();
    std::fs::write(e.store(), "00000000-0000-0000-0000-00000000beef").unwrap();
    drop(fresh);
    e.later(301).await;
    let again = e.open(set.id, Some(e.store())).await.unwrap();
    let deletes: Vec<Option<u16>> = e
        .fake
        .control()
        .requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method == "DELETE" && r.path.contains("/sessions/"))
        .map(|r| r.status)
        .collect();
    assert_eq!(
        deletes,
        vec![Some(204), Some(400), Some(404)],
        "the killed run's session, then an expired one, then an unknown one"
    );
    again.close().await.unwrap();
    e.conforms().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_renewed_the_admin_one_before_it_expires() {
    let e = env().await;
    let set = e.scale_set().await;
    let mut s = e.open(set.id, None).await.unwrap();
    let first_token = s.session().queue_token.expose().to_string();

    // The queue token expires: the poll gets a 401, the session is refreshed (a whole new
    // session, with a new token) and the poll sent once more.
    e.later(QUEUE_TOKEN_SECS + 1).await;
    assert!(s.get_message(0, 2).await.unwrap().is_none());
    assert_eq!(e.count("PATCH", "*/sessions/").await, 1);
    assert_ne!(s.session().queue_token.expose(), first_token);
    // The same for acquiring jobs and for deleting a message: one refresh, one more try.
    e.later(QUEUE_TOKEN_SECS + 1).await;
    assert_eq!(s.acquire_jobs(&[424242]).await.unwrap(), Vec::<i64>::new());
    assert_eq!(e.count("PATCH", "*/sessions/").await, 2);
    e.later(QUEUE_TOKEN_SECS + 1).await;
    s.delete_message(1).await.unwrap();
    assert_eq!(e.count("PATCH", "*/sessions/").await, 3);

    // The admin token (10 minutes): within a minute of its `exp` by the client's clock, the
    // whole chain runs again before the next call, and the call goes through.
    assert_eq!(e.count("POST", "/actions/runner-registration").await, 1);
    e.later(600).await;
    assert_eq!(e.client.scale_set(set.id).await.unwrap().id, set.id);
    assert_eq!(e.count("POST", "/actions/runner-registration").await, 2);
    assert_eq!(e.count("POST", "/runners/registration-token").await, 2);
    e.conforms().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_app_reaches_the_service_through_its_installation_token() {
    let fake = FakeGitHub::start(FakeConfig::default()).await.unwrap();
    let time = TestTime::new();
    let opts = || ClientOptions {
        request_timeout: Duration::from_secs(30),
        deadline: Duration::from_secs(120),
        time: time.clone(),
    };
    let app = Auth::App {
        id: sysrunner_testkit::fake_github::APP_ID.to_string(),
        key: Secret::new(include_str!("keys/app.pem")),
        installation: None,
    };
    let rest = Arc::new(Client::new(fake.api_url(), scope(), app, opts()).unwrap());
    let client = ActionsClient::new(
        rest,
        fake.api_url(),
        fake.web_url(),
        &scope(),
        Options {
            request_timeout: Duration::from_secs(30),
            deadline: Duration::from_secs(120),
            poll_timeout: Duration::from_secs(30),
            time: time.clone(),
        },
    )
    .unwrap();
    assert_eq!(client.config_url(), format!("{}/octo-org", fake.web_url()));
    assert!(client.scale_set_by_name(1, NAME).await.unwrap().is_none());
    let log = fake.control().requests().await.unwrap();
    let auth_of = |end: &str| {
        log.iter()
            .find(|r| r.path.ends_with(end))
            .and_then(|r| r.request_headers.get("authorization").cloned())
    };
    assert!(
        auth_of("/access_tokens").is_some(),
        "the App's installation token was made"
    );
    assert_eq!(
        auth_of("/actions/runner-registration").as_deref(),
        Some("RemoteAuth <registration-token>")
    );
}
