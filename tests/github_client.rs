//! The GitHub client against the fake GitHub over real HTTP on loopback: each scope, PAT and App,
//! GHES-style and github.com-style bases, every fault GitHub's rules cover (attempts and waits read
//! from the injected clock), token renewal, 409 recovery, prune. Every answer the fake gave is
//! checked against runners-openapi.json at the end of each test.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use sysrunner::config::{Auth, Scope};
use sysrunner::exit::Exit;
use sysrunner::github::{ApiError, Client, ClientOptions, Deleted, Time, prune};
use sysrunner::secret::Secret;
use sysrunner_testkit::fake_github::{
    ALL_GRANTS_PAT, APP_ID, FakeConfig, FakeGitHub, Fault, FaultRule, NewRunner, REPO_ONLY_PAT,
    SetRunnerState,
};

const KEY: &str = include_str!("keys/app.pem");

mod clock_support;
use clock_support::TestTime;

struct Env {
    fake: FakeGitHub,
    time: Arc<TestTime>,
}

async fn fake(cfg: FakeConfig) -> Env {
    Env {
        fake: FakeGitHub::start(cfg).await.expect("fake GitHub starts"),
        time: TestTime::new(),
    }
}

fn repo() -> Scope {
    Scope::Repo {
        owner: "octo-org".into(),
        repo: "octo-repo".into(),
    }
}

fn pat(t: &str) -> Auth {
    Auth::Token(Secret::new(t))
}

fn app() -> Auth {
    Auth::App {
        id: APP_ID.to_string(),
        key: Secret::new(KEY),
        installation: None,
    }
}

impl Env {
    fn client(&self, scope: Scope, auth: Auth) -> Client {
        self.client_at(self.fake.api_url(), scope, auth, Duration::from_secs(120))
    }
    fn client_at(&self, api: &str, scope: Scope, auth: Auth, deadline: Duration) -> Client {
        // Long enough that a stalled test thread on a loaded machine never times a request out;
        // the test of timeouts sets its own.
        self.client_timing_out(api, scope, auth, deadline, Duration::from_secs(30))
    }
    fn client_timing_out(
        &self,
        api: &str,
        scope: Scope,
        auth: Auth,
        deadline: Duration,
        request_timeout: Duration,
    ) -> Client {
        Client::new(
            api,
            scope,
            auth,
            ClientOptions {
                request_timeout,
                deadline,
                time: self.time.clone(),
            },
        )
        .unwrap()
    }
    async fn fault(&self, method: &str, path: &str, count: u32, fault: Fault) {
        self.fake
            .control()
            .add_fault(&FaultRule {
                method: method.into(),
                path: path.into(),
                count,
                fault,
            })
            .await
            .unwrap();
    }
    async fn count(&self, method: &str, path_end: &str) -> usize {
        self.fake
            .control()
            .requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.method == method && r.path.ends_with(path_end))
            .count()
    }
    /// Every answer the fake gave conforms to runners-openapi.json.
    async fn conforms(&self) {
        let log = self.fake.control().requests().await.unwrap();
        if let Some(doc) = sysrunner_testkit::openapi::load() {
            assert!(doc.assert_conforms(&log) > 0, "no answer was checked");
        }
    }
}

fn labels() -> Vec<String> {
    ["self-hosted", "Linux", "X64", "gpu"]
        .map(String::from)
        .to_vec()
}

#[tokio::test]
async fn jit_config_for_each_scope_with_a_pat() {
    let e = fake(FakeConfig::default()).await;
    for (scope, group, want_group) in [
        (repo(), "Default", 1),
        (Scope::Org("octo-org".into()), "sysrunner", 2),
        (Scope::Enterprise("octo-ent".into()), "Default", 1),
    ] {
        let c = e.client(scope.clone(), pat(ALL_GRANTS_PAT));
        let j = c
            .jit_config("sysrunner-a1", group, &labels(), "_work", None)
            .await
            .unwrap();
        let runners = e.fake.control().runners().await.unwrap();
        let r = runners
            .iter()
            .find(|r| r.id == j.runner_id)
            .unwrap_or_else(|| panic!("{scope}: runner made"));
        assert_eq!(r.name, "sysrunner-a1");
        assert_eq!(r.runner_group_id, want_group, "{scope}");
        assert!(r.labels.contains(&"gpu".to_string()), "{:?}", r.labels);
        assert!(!j.encoded.expose().is_empty());
        assert_eq!(
            c.delete_runner(j.runner_id).await.unwrap(),
            Deleted::Deleted
        );
        assert_eq!(
            c.delete_runner(j.runner_id).await.unwrap(),
            Deleted::NotFound
        );
    }
    // Every request carried the headers GitHub wants.
    for r in e
        .fake
        .control()
        .requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.api_path.is_some())
    {
        assert_eq!(
            r.request_headers.get("accept").map(String::as_str),
            Some("application/vnd.github+json")
        );
        assert_eq!(
            r.request_headers
                .get("x-github-api-version")
                .map(String::as_str),
            Some("2022-11-28")
        );
        assert!(
            r.request_headers
                .get("user-agent")
                .is_some_and(|u| u.starts_with("sysrunner/"))
        );
    }
    e.conforms().await;
}

#[tokio::test]
async fn the_jit_config_decodes_to_the_runner_triple() {
    use base64::Engine;
    let e = fake(FakeConfig::default()).await;
    let j = e
        .client(repo(), pat(ALL_GRANTS_PAT))
        .jit_config("sysrunner-t", "Default", &labels(), "_work", None)
        .await
        .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let outer: serde_json::Value =
        serde_json::from_slice(&b64.decode(j.encoded.expose()).unwrap()).unwrap();
    let runner: serde_json::Value =
        serde_json::from_slice(&b64.decode(outer[".runner"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(runner["agentId"].as_u64(), Some(j.runner_id));
    assert_eq!(runner["agentName"], "sysrunner-t");
    for k in [".credentials", ".credentials_rsaparams"] {
        assert!(outer[k].is_string(), "{k}");
    }
    e.conforms().await;
}

#[tokio::test]
async fn an_app_finds_its_installation_and_renews_its_token() {
    let cfg = FakeConfig {
        installation_token_ttl_secs: 120,
        ..FakeConfig::default()
    };
    let e = fake(cfg).await;
    for scope in [repo(), Scope::Org("octo-org".into())] {
        let c = e.client(scope.clone(), app());
        let j = c
            .jit_config("sysrunner-app", "Default", &labels(), "_work", None)
            .await
            .unwrap_or_else(|err| panic!("{scope}: {err}"));
        assert!(e.count("POST", "/access_tokens").await >= 1);
        let before = e.count("POST", "/access_tokens").await;
        // Within the token's life: cached.
        c.get_runner(j.runner_id).await.unwrap();
        assert_eq!(
            e.count("POST", "/access_tokens").await,
            before,
            "token reused"
        );
        // Past it (a job that outlived the token): deregistration still works, with a new token.
        e.time.advance(Duration::from_secs(200));
        e.fake.control().advance_clock(200).await.unwrap();
        assert_eq!(
            c.delete_runner(j.runner_id).await.unwrap(),
            Deleted::Deleted
        );
        assert_eq!(
            e.count("POST", "/access_tokens").await,
            before + 1,
            "token renewed"
        );
    }
    e.conforms().await;
}

#[tokio::test]
async fn an_app_with_a_given_installation_id_skips_the_lookup() {
    let e = fake(FakeConfig::default()).await;
    let c = e.client(
        Scope::Org("octo-org".into()),
        Auth::App {
            id: sysrunner_testkit::fake_github::APP_CLIENT_ID.into(),
            key: Secret::new(KEY),
            installation: Some(sysrunner_testkit::fake_github::ORG_INSTALLATION_ID),
        },
    );
    c.list_runners(None).await.unwrap();
    assert_eq!(e.count("GET", "/installation").await, 0);
    e.conforms().await;
}

#[tokio::test]
async fn a_ghes_style_base_works() {
    let e = fake(FakeConfig {
        base_path: "/api/v3".into(),
        ..FakeConfig::default()
    })
    .await;
    let api = format!("{}/api/v3", e.fake.web_url());
    let c = e.client_at(&api, repo(), pat(ALL_GRANTS_PAT), Duration::from_secs(60));
    c.jit_config("sysrunner-ghes", "Default", &labels(), "_work", None)
        .await
        .unwrap();
    assert!(
        e.fake
            .control()
            .requests()
            .await
            .unwrap()
            .iter()
            .any(|r| r.path.starts_with("/api/v3/repos/"))
    );
    e.conforms().await;
}

#[tokio::test]
async fn server_errors_back_off_exponentially() {
    let e = fake(FakeConfig::default()).await;
    e.fault(
        "GET",
        "*/actions/runners",
        3,
        Fault::ServerError { status: 502 },
    )
    .await;
    e.client(repo(), pat(ALL_GRANTS_PAT))
        .list_runners(None)
        .await
        .unwrap();
    assert_eq!(e.time.sleeps(), [1, 2, 4]);
    assert_eq!(e.count("GET", "/actions/runners").await, 4);
    e.conforms().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let e = fake(FakeConfig::default()).await;
    e.fault(
        "*",
        "*/registration-token",
        1,
        Fault::TooManyRequests {
            retry_after_secs: 7,
        },
    )
    .await;
    e.client(repo(), pat(ALL_GRANTS_PAT))
        .registration_token()
        .await
        .unwrap();
    assert_eq!(e.time.sleeps(), [7]);
    e.conforms().await;
}

#[tokio::test]
async fn an_exhausted_rate_limit_waits_until_its_reset() {
    let e = fake(FakeConfig::default()).await;
    e.fault(
        "*",
        "*/remove-token",
        1,
        Fault::RateLimited {
            reset_after_secs: 100,
        },
    )
    .await;
    // The client's clock stands still at `start`; the fake's reset is 100 s after its real
    // clock at the reply, so every real second the test took adds up to one to the wait.
    let start = e.time.now();
    e.client(repo(), pat(ALL_GRANTS_PAT))
        .remove_token()
        .await
        .unwrap();
    let took = SystemTime::now().duration_since(start).unwrap().as_secs();
    let s = e.time.sleeps();
    assert_eq!(s.len(), 1);
    assert!(
        (100..=102 + took).contains(&s[0]),
        "waited {s:?} ({took} s)"
    );
    e.conforms().await;
}

#[tokio::test]
async fn a_secondary_limit_without_headers_waits_a_minute() {
    let e = fake(FakeConfig::default()).await;
    e.fault(
        "*",
        "*/actions/runners",
        1,
        Fault::SecondaryRateLimit {
            retry_after_secs: None,
        },
    )
    .await;
    e.client(repo(), pat(ALL_GRANTS_PAT))
        .list_runners(None)
        .await
        .unwrap();
    assert_eq!(e.time.sleeps(), [60]);
    e.conforms().await;
}

#[tokio::test]
async fn a_request_that_hangs_past_the_timeout_is_retried() {
    let e = fake(FakeConfig::default()).await;
    e.fault("*", "*/actions/runners", 1, Fault::Hang { millis: 3000 })
        .await;
    e.client_timing_out(
        e.fake.api_url(),
        repo(),
        pat(ALL_GRANTS_PAT),
        Duration::from_secs(120),
        Duration::from_millis(500),
    )
    .list_runners(None)
    .await
    .unwrap();
    assert_eq!(e.time.sleeps(), [1]);
    e.conforms().await;
}

#[tokio::test]
async fn giving_up_at_the_deadline_means_exit_69() {
    let e = fake(FakeConfig::default()).await;
    e.fault(
        "*",
        "*/actions/runners",
        100,
        Fault::ServerError { status: 503 },
    )
    .await;
    let c = e.client_at(
        e.fake.api_url(),
        repo(),
        pat(ALL_GRANTS_PAT),
        Duration::from_secs(20),
    );
    let err = c.list_runners(None).await.unwrap_err();
    assert!(
        matches!(err, ApiError::Unavailable { attempts: 5, .. }),
        "{err}"
    );
    assert_eq!(e.count("GET", "/actions/runners").await, 5);
    assert_eq!(Exit::from(&err), Exit::Unavailable);
    assert_eq!(
        e.time.sleeps(),
        [1, 2, 4, 8],
        "the next wait (16s) would pass the 20s deadline"
    );
    e.conforms().await;
}

#[tokio::test]
async fn bad_credentials_missing_permission_and_unknown_scope_are_refused_at_once() {
    let e = fake(FakeConfig::default()).await;
    let err = e
        .client(repo(), pat("ghp_wrong"))
        .list_runners(None)
        .await
        .unwrap_err();
    assert_eq!(Exit::from(&err), Exit::Refused);
    assert!(err.to_string().contains("Bad credentials"), "{err}");
    let err = e
        .client(Scope::Org("octo-org".into()), pat(REPO_ONLY_PAT))
        .list_runners(None)
        .await
        .unwrap_err();
    assert_eq!(Exit::from(&err), Exit::Refused);
    assert!(
        err.to_string().contains("admin:org"),
        "the hint names the permission: {err}"
    );
    let err = e
        .client(
            Scope::Repo {
                owner: "octo-org".into(),
                repo: "nope".into(),
            },
            pat(ALL_GRANTS_PAT),
        )
        .list_runners(None)
        .await
        .unwrap_err();
    assert_eq!(Exit::from(&err), Exit::Refused);
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(e.time.sleeps().is_empty(), "nothing was retried");
    e.conforms().await;
}

#[tokio::test]
async fn a_leftover_offline_runner_with_the_name_is_replaced() {
    let e = fake(FakeConfig::default()).await;
    let old = e
        .fake
        .control()
        .create_runner(&NewRunner {
            scope: "repos/octo-org/octo-repo".into(),
            name: "sysrunner-x".into(),
            labels: vec![],
            runner_group_id: None,
            ephemeral: true,
        })
        .await
        .unwrap();
    let j = e
        .client(repo(), pat(ALL_GRANTS_PAT))
        .jit_config("sysrunner-x", "Default", &labels(), "_work", None)
        .await
        .unwrap();
    assert_ne!(j.runner_id, old.id);
    let names: Vec<u64> = e
        .fake
        .control()
        .runners()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.name == "sysrunner-x")
        .map(|r| r.id)
        .collect();
    assert_eq!(names, [j.runner_id]);
    e.conforms().await;
}

#[tokio::test]
async fn a_jitconfig_that_timed_out_but_succeeded_is_recovered() {
    let e = fake(FakeConfig::default()).await;
    e.fault("POST", "*/generate-jitconfig", 1, Fault::DropAfterEffect)
        .await;
    let j = e
        .client(repo(), pat(ALL_GRANTS_PAT))
        .jit_config("sysrunner-y", "Default", &labels(), "_work", None)
        .await
        .unwrap();
    let named: Vec<u64> = e
        .fake
        .control()
        .runners()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.name == "sysrunner-y")
        .map(|r| r.id)
        .collect();
    assert_eq!(
        named,
        [j.runner_id],
        "the first (dropped) registration was deleted"
    );
    assert_eq!(
        e.count("POST", "/generate-jitconfig").await,
        3,
        "dropped, 409, created"
    );
    e.conforms().await;
}

#[tokio::test]
async fn a_live_runner_with_the_name_is_a_duplicate_unless_it_is_ours() {
    let e = fake(FakeConfig::default()).await;
    let ctl = e.fake.control();
    let live = ctl
        .create_runner(&NewRunner {
            scope: "repos/octo-org/octo-repo".into(),
            name: "sysrunner-z".into(),
            labels: vec![],
            runner_group_id: None,
            ephemeral: true,
        })
        .await
        .unwrap();
    ctl.set_runner_state(
        live.id,
        &SetRunnerState {
            status: Some("online".into()),
            busy: None,
        },
    )
    .await
    .unwrap();
    let c = e.client(repo(), pat(ALL_GRANTS_PAT));
    let err = c
        .jit_config("sysrunner-z", "Default", &labels(), "_work", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApiError::Duplicate { ref name, id } if name == "sysrunner-z" && id == live.id),
        "{err}"
    );
    assert_eq!(Exit::from(&err), Exit::Refused);
    // The same runner, recorded by this container in an earlier life: deleted and replaced.
    let j = c
        .jit_config("sysrunner-z", "Default", &labels(), "_work", Some(live.id))
        .await
        .unwrap();
    assert_ne!(j.runner_id, live.id);
    e.conforms().await;
}

/// A runner of `name` in the repository, online and busy: what a container killed during its
/// job leaves at GitHub.
async fn busy_runner(e: &Env, name: &str) -> sysrunner_testkit::fake_github::RunnerState {
    let ctl = e.fake.control();
    let r = ctl
        .create_runner(&NewRunner {
            scope: "repos/octo-org/octo-repo".into(),
            name: name.into(),
            labels: vec![],
            runner_group_id: None,
            ephemeral: true,
        })
        .await
        .unwrap();
    let busy = SetRunnerState {
        status: Some("online".into()),
        busy: Some(true),
    };
    ctl.set_runner_state(r.id, &busy).await.unwrap();
    r
}

/// Found by the soak (seed 3, life 10): a container killed during its job leaves its runner busy
/// at GitHub until the job times out. The next life's JIT registration met that runner, could
/// not delete it (busy) and called it another container's: exit 77. It is this container's own
/// (recorded) runner: the life registers under a name of its own instead.
#[tokio::test]
async fn a_busy_leftover_of_this_container_gets_a_name_of_its_own_not_a_77() {
    let e = fake(FakeConfig::default()).await;
    let mine = busy_runner(&e, "sysrunner-k").await;
    let c = e.client(repo(), pat(ALL_GRANTS_PAT));
    let j = c
        .jit_config("sysrunner-k", "Default", &labels(), "_work", Some(mine.id))
        .await
        .unwrap();
    assert_ne!(j.runner_id, mine.id);
    assert!(
        j.runner_name.starts_with("sysrunner-k-")
            && j.runner_name.len() == "sysrunner-k-".len() + 4,
        "{}",
        j.runner_name
    );
    // Another container's busy runner of that name is still a duplicate.
    let err = c
        .jit_config("sysrunner-k", "Default", &labels(), "_work", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApiError::Duplicate { id, .. } if id == mine.id),
        "{err}"
    );
    e.conforms().await;
}

/// The soak's finding in `REGISTRATION=config` (seed 78, life 1): the same busy leftover made
/// `config.sh --replace` fail with GitHub's 422 "still running a job" and the life exit 75, life
/// after life. The life registers under a name of its own there too.
#[tokio::test]
async fn a_busy_leftover_of_this_container_gets_a_name_of_its_own_in_config_mode_too() {
    use sysrunner::register::{ApiRegistrar, Registrar, Start};
    let e = fake(FakeConfig::default()).await;
    let mine = busy_runner(&e, "sysrunner-c").await;
    let registrar = ApiRegistrar {
        client: Arc::new(e.client(repo(), pat(ALL_GRANTS_PAT))),
        mode: sysrunner::config::Mode::Config,
        name: "sysrunner-c".into(),
        labels: vec![],
        group: "Default".into(),
        workdir: "_work".into(),
        no_default_labels: false,
        url: format!("{}/octo-org/octo-repo", e.fake.web_url()),
    };
    let name_arg = |start: &Start| match start {
        Start::Configure { args, .. } => {
            let i = args.iter().position(|a| a == "--name").expect("--name");
            args[i + 1].clone()
        }
        Start::Jit(_) => panic!("config mode starts with config.sh"),
    };
    let r = registrar.register(Some(mine.id)).await.unwrap();
    assert!(
        r.name.starts_with("sysrunner-c-") && r.name.len() == "sysrunner-c-".len() + 4,
        "{}",
        r.name
    );
    assert_eq!(name_arg(&r.start), r.name);
    // Without a busy leftover of its own, the name is RUNNER_NAME (config.sh --replace takes an
    // offline one over).
    let r = registrar.register(None).await.unwrap();
    assert_eq!(
        (r.name.as_str(), name_arg(&r.start).as_str()),
        ("sysrunner-c", "sysrunner-c")
    );
    e.conforms().await;
}

#[tokio::test]
async fn prune_deletes_only_stale_runners_of_the_prefix() {
    let e = fake(FakeConfig::default()).await;
    let ctl = e.fake.control();
    let mk = |name: &str| NewRunner {
        scope: "repos/octo-org/octo-repo".into(),
        name: name.into(),
        labels: vec![],
        runner_group_id: None,
        ephemeral: true,
    };
    let stale = ctl.create_runner(&mk("sysrunner-stale")).await.unwrap();
    let online = ctl.create_runner(&mk("sysrunner-online")).await.unwrap();
    ctl.set_runner_state(
        online.id,
        &SetRunnerState {
            status: Some("online".into()),
            busy: None,
        },
    )
    .await
    .unwrap();
    let busy = ctl.create_runner(&mk("sysrunner-busy")).await.unwrap();
    ctl.set_runner_state(
        busy.id,
        &SetRunnerState {
            status: Some("online".into()),
            busy: Some(true),
        },
    )
    .await
    .unwrap();
    let foreign = ctl.create_runner(&mk("other-offline")).await.unwrap();
    let c = e.client(repo(), pat(ALL_GRANTS_PAT));
    // A runner that registers between the two listings is offline in the second only.
    let fresh = Arc::new(Mutex::new(None));
    let grace = {
        let ctl = e.fake.control();
        let fresh = fresh.clone();
        async move {
            let r = ctl
                .create_runner(&mk("sysrunner-just-registered"))
                .await
                .unwrap();
            *fresh.lock().unwrap() = Some(r.id);
        }
    };
    let out = prune::prune(&c, "sysrunner", true, grace).await.unwrap();
    assert_eq!(
        out.candidates.iter().map(|r| r.id).collect::<Vec<_>>(),
        [stale.id]
    );
    assert_eq!(out.deleted, [stale.id]);
    let left: Vec<u64> = ctl.runners().await.unwrap().iter().map(|r| r.id).collect();
    for keep in [
        online.id,
        busy.id,
        foreign.id,
        fresh.lock().unwrap().unwrap(),
    ] {
        assert!(left.contains(&keep), "{keep} was deleted");
    }
    e.conforms().await;
}

/// The runner releases GitHub offers, per scope: what the lifecycle's version check reads.
#[tokio::test]
async fn runner_downloads_name_the_offered_release_for_each_scope() {
    let e = fake(FakeConfig {
        runner_version: "2.340.1".into(),
        ..FakeConfig::default()
    })
    .await;
    for scope in [
        repo(),
        Scope::Org("octo-org".into()),
        Scope::Enterprise("octo-ent".into()),
    ] {
        let list = e
            .client(scope.clone(), pat(ALL_GRANTS_PAT))
            .runner_downloads()
            .await
            .unwrap();
        let offered = sysrunner::runner::version::offered(
            list.iter().map(|d| d.filename.as_str()),
            sysrunner::runner::version::runner_arch(),
        );
        assert_eq!(
            offered.map(|v| v.to_string()).as_deref(),
            Some("2.340.1"),
            "{scope}"
        );
        assert!(
            list.iter()
                .any(|d| d.os == "linux" && d.architecture == "arm64")
        );
    }
    e.conforms().await;
}
