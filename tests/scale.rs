//! `sysrunner scale` against a real dockerd (in a privileged-like box), the fake GitHub's scale
//! set API and a small runner image (sysrunner with `DOCKERD=off` and the fake runner): the
//! controller in the box, one plain runc container per job on dockerd's default bridge. This
//! machine cannot start sysbox or privileged containers, so `SCALE_RUNTIME=runc`; the runtime
//! choice itself is `scale::spec`'s unit tests. The pull-through cache container the controller
//! finds or makes runs the rig's [`CACHE_IMAGE`] (Debian's `docker-registry`, reaching nothing
//! beyond its loopback); the fake runner ignores the cache URL it is given, so what is tested is
//! what the controller gives it.

use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};
use sysrunner_testkit as testkit;
use sysrunner_testkit::Need;
use sysrunner_testkit::fake_github::{
    ControlClient, FakeConfig, Fault, FaultRule, Job, JobResult, JobSpec, JobStatus, NewRunner,
};
use sysrunner_testkit::scale_rig::{CACHE_IMAGE, IMAGE, SOCKET, ScaleRig};

const NEEDS: &[Need] = &[
    Need::Root,
    Need::UserNamespaces,
    Need::Cgroups,
    Need::Overlay,
    Need::Dockerd,
    Need::Busybox,
];
const LABEL: &str = "sysrunner.scale-set";
const LIMIT: Duration = Duration::from_secs(120);
const METRICS: &str = "127.0.0.1:9102";
/// SCALE_CACHE_NAME's default: the cache container's name and its volume's.
const CACHE: &str = "sysrunner-cache";

fn ready(what: &str) -> Option<sysrunner_testkit::lock::Lock> {
    testkit::require(what, NEEDS).then(testkit::serial)
}

struct Stand {
    s: ScaleRig,
    url: String,
    exe: PathBuf,
    dir: tempfile::TempDir,
}

/// A running controller: its process and its log.
struct Controller {
    child: Child,
    log: PathBuf,
}

impl Controller {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Waits for its exit: the code, or a panic with its log.
    fn wait(mut self, limit: Duration) -> (Option<i32>, String) {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st.code(), self.log());
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!(
                    "the controller did not exit within {limit:?}\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Stand {
    fn start(cfg: FakeConfig) -> Stand {
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_sysrunner"));
        let s = ScaleRig::start(cfg, &exe).unwrap_or_else(|e| panic!("scale rig: {e}"));
        let url = s.rig.settings("x")["GITHUB_URL"].clone();
        Stand {
            s,
            url,
            exe,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn ctl<T: Send + 'static, F: std::future::Future<Output = T> + Send + 'static>(
        &self,
        f: impl FnOnce(ControlClient) -> F,
    ) -> T {
        let c = ControlClient::new(&self.url);
        self.s.rig.in_github_netns(f(c))
    }

    fn settings(&self, set: &str) -> BTreeMap<String, String> {
        [
            ("REPO", "octo-org/octo-repo"),
            ("ACCESS_TOKEN", testkit::rig::TOKEN),
            ("GITHUB_URL", &self.url),
            ("GITHUB_API_URL", &self.url),
            ("SCALE_SET_NAME", set),
            ("SCALE_IMAGE", IMAGE),
            ("SCALE_RUNTIME", "runc"),
            ("SCALE_DOCKER_SOCKET", SOCKET),
            ("SCALE_STATE_DIR", "/var/lib/sysrunner/scale"),
            ("SCALE_MAX_RUNNERS", "4"),
            ("API_TIMEOUT", "5s"),
            ("API_DEADLINE", "30s"),
            ("LOG_FORMAT", "json"),
            ("NO_COLOR", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn controller(&self, env: &BTreeMap<String, String>, log: &str) -> Controller {
        let log = self.dir.path().join(log);
        let child = self
            .s
            .rig
            .spawn_in_box(&self.s.rig.b.sysrunner_in_box(), &["scale"], env, &log)
            .unwrap();
        let _ = &self.exe;
        Controller { child, log }
    }

    fn queue(&self, name: &str, labels: &[&str], steps: &[&str]) -> Job {
        let spec = JobSpec {
            runner_name: String::new(),
            name: name.into(),
            steps: steps.iter().map(|s| s.to_string()).collect(),
            scope: None,
            labels: labels.iter().map(|s| s.to_string()).collect(),
        };
        self.ctl(|c| async move { c.queue_job(&spec).await })
            .expect("queue a job")
    }

    fn job(&self, id: u64) -> Job {
        self.ctl(move |c| async move { c.job(id).await }).unwrap()
    }

    fn runner_names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.s.rig.runners().into_iter().map(|r| r.name).collect();
        n.sort();
        n
    }

    fn ours(&self, set: &str) -> Vec<String> {
        self.s.containers(&format!("{LABEL}={set}"))
    }

    fn running(&self, set: &str) -> Vec<String> {
        let out = self.s.docker(&format!(
            "ps --quiet --no-trunc --filter label={LABEL}={set} --filter status=running"
        ));
        out.lines().map(String::from).collect()
    }

    /// Polls every 100 ms until `f` holds; panics with the controller's log after `limit`.
    fn until(&self, c: &Controller, what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{what}: not within {limit:?}\n--- runners {:?}\n--- containers {}\n--- controller\n{}",
            self.runner_names(),
            self.s.docker("ps --all"),
            c.log()
        );
    }

    fn done(&self, id: u64) -> bool {
        self.job(id).status == JobStatus::Completed
    }

    /// `wget` in the box (the controller's port is on the box's loopback): the body, or the error.
    fn http(&self, path: &str) -> Result<String, String> {
        let out = self
            .s
            .rig
            .b
            .output(self.s.rig.b.command("/bin/busybox").args([
                "wget",
                "-q",
                "-O",
                "-",
                &format!("http://{METRICS}{path}"),
            ]))
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `docker inspect -f FORMAT` of the container or volume `what`: `None` when there is none.
    fn inspect(&self, what: &str, format: &str) -> Option<String> {
        self.s
            .try_docker(
                &format!("inspect -f '{format}' {what}"),
                &[],
                Duration::from_secs(60),
            )
            .ok()
    }

    /// The cache container: its id, state, restart policy, mounts and its address on the
    /// default bridge (empty when not attached there).
    fn cache(&self) -> Option<CacheSeen> {
        let out = self.inspect(
            CACHE,
            "{{.Id}}|{{.State.Status}}|{{.HostConfig.RestartPolicy.Name}}|{{range .Mounts}}{{.Type}}:{{.Name}}:{{.Destination}} {{end}}|{{with index .NetworkSettings.Networks \"bridge\"}}{{.IPAddress}}{{end}}|{{index .Config.Labels \"sysrunner.cache\"}}",
        )?;
        let f: Vec<&str> = out.split('|').collect();
        assert_eq!(f.len(), 6, "{out}");
        Some(CacheSeen {
            id: f[0].into(),
            status: f[1].into(),
            restart: f[2].into(),
            mounts: f[3].trim().into(),
            bridge_ip: f[4].into(),
            label: f[5].into(),
        })
    }

    /// What container `id` was given as DOCKER_REGISTRY_CACHE: `Some(None)` for nothing, `None`
    /// when the container is gone.
    fn cache_env(&self, id: &str) -> Option<Option<String>> {
        let env = self.inspect(id, "{{range .Config.Env}}{{println .}}{{end}}")?;
        Some(
            env.lines()
                .find_map(|l| l.strip_prefix("DOCKER_REGISTRY_CACHE="))
                .map(String::from),
        )
    }

    fn metric(&self, name: &str) -> Option<f64> {
        let text = self.http("/metrics").ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
    }
}

/// The cache container as `docker inspect` shows it.
#[derive(Debug)]
struct CacheSeen {
    id: String,
    status: String,
    restart: String,
    mounts: String,
    bridge_ip: String,
    label: String,
}

fn succeeded(st: &Stand, job: &Job, c: &Controller) {
    let j = st.job(job.id);
    assert_eq!(
        j.result,
        Some(JobResult::Succeeded),
        "{}: {}\n{}",
        j.name,
        j.output,
        c.log()
    );
}

/// 0 → three jobs queued → three containers, three jobs done → nothing left: no container, no
/// runner; SIGTERM ends the controller with 0 and its session is gone. SCALE_CACHE=auto with no
/// cache container: the controller makes one (restart always, on its volume, on the runners'
/// network), every runner gets its URL, and it outlives the drain and the exit.
#[test]
fn three_jobs_get_three_fresh_containers_and_nothing_is_left() {
    let Some(_serial) = ready("scale: three jobs") else {
        return;
    };
    // GitHub offers a newer runner than the image's (the fake runner's 2.336.0).
    let st = Stand::start(FakeConfig {
        runner_version: "2.999.0".into(),
        ..FakeConfig::default()
    });
    let mut env = st.settings("scale-a");
    env.insert("SCALE_LISTEN".into(), METRICS.into());
    // Three jobs, two runners at most: the third waits for a container to go.
    env.insert("SCALE_MAX_RUNNERS".into(), "2".into());
    // At debug, nothing logs a request body (a container's create body holds its JIT config).
    env.insert("LOG_LEVEL".into(), "debug".into());
    st.s.import_cache_image()
        .unwrap_or_else(|e| panic!("cache image: {e}"));
    env.insert("SCALE_CACHE_IMAGE".into(), CACHE_IMAGE.into());
    assert!(st.cache().is_none());
    let c = st.controller(&env, "a.log");
    st.until(&c, "the controller listening", LIMIT, || {
        st.http("/healthz").is_ok()
    });
    assert!(st.ours("scale-a").is_empty(), "scaled to zero at start");
    let cache = st
        .cache()
        .unwrap_or_else(|| panic!("no cache made\n{}", c.log()));
    assert_eq!(cache.status, "running", "{cache:?}\n{}", c.log());
    assert_eq!(cache.restart, "always", "{cache:?}");
    assert_eq!(
        cache.mounts,
        format!("volume:{CACHE}:/var/lib/registry"),
        "{cache:?}"
    );
    assert_eq!(cache.label, "scale-a", "{cache:?}");
    assert!(
        !cache.bridge_ip.is_empty(),
        "not on SCALE_NETWORK: {cache:?}"
    );
    assert_eq!(
        st.inspect(CACHE, "{{range .Config.Env}}{{println .}}{{end}}")
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("REGISTRY_PROXY_REMOTEURL="))
            .collect::<Vec<_>>(),
        vec!["REGISTRY_PROXY_REMOTEURL=https://registry-1.docker.io"]
    );
    let url = format!("http://{}:5000", cache.bridge_ip);
    assert!(
        c.log().contains(&format!(
            "runners pull Docker Hub images through the cache {CACHE} at {url}"
        )),
        "{}",
        c.log()
    );
    let log = c.log();
    assert!(
        log.lines()
            .any(|l| l.contains("\"image\":\"2.336.0\"") && l.contains("\"offered\":\"2.999.0\"")),
        "no warning naming both runner versions:\n{log}"
    );
    let jobs: Vec<Job> = (0..3)
        .map(|i| {
            st.queue(
                &format!("job-{i}"),
                &["scale-a"],
                &[
                    "echo in a fresh container",
                    "test ! -e /var/run/docker.sock",
                ],
            )
        })
        .collect();
    let mut most = 0;
    // What each runner container was given as DOCKER_REGISTRY_CACHE, read while it is there.
    let mut given: BTreeMap<String, Option<String>> = BTreeMap::new();
    st.until(&c, "three jobs done", LIMIT, || {
        let ours = st.ours("scale-a");
        most = most.max(ours.len());
        for id in ours {
            if !given.contains_key(&id)
                && let Some(v) = st.cache_env(&id)
            {
                given.insert(id, v);
            }
        }
        jobs.iter().all(|j| st.done(j.id))
    });
    assert!(!given.is_empty(), "no runner container seen");
    for (id, v) in &given {
        assert_eq!(v.as_deref(), Some(url.as_str()), "runner container {id}");
    }
    for j in &jobs {
        succeeded(&st, j, &c);
    }
    // Each job had its own runner: three distinct runner ids took them.
    let mut took: Vec<u64> = jobs.iter().filter_map(|j| st.job(j.id).runner_id).collect();
    took.sort();
    took.dedup();
    assert_eq!(
        took.len(),
        3,
        "{:?}",
        jobs.iter().map(|j| st.job(j.id)).collect::<Vec<_>>()
    );
    assert!(
        most <= 2,
        "at most SCALE_MAX_RUNNERS containers at once: {most}"
    );
    st.until(&c, "no container and no runner left", LIMIT, || {
        st.ours("scale-a").is_empty() && st.runner_names().is_empty()
    });
    st.until(&c, "the metrics count three jobs", LIMIT, || {
        st.metric("sysrunner_scale_jobs_completed_total") == Some(3.0)
            && st.metric("sysrunner_scale_jobs_started_total") == Some(3.0)
    });
    c.signal(Signal::SIGTERM);
    let (code, log) = c.wait(LIMIT);
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("\"level\":\"DEBUG\""),
        "the controller logged at debug:\n{log}"
    );
    for secret in [testkit::rig::TOKEN, "ACTIONS_RUNNER_INPUT_JITCONFIG="] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    // The cache outlives the drain and the exit: the same container, running, and its volume.
    let after = st
        .cache()
        .expect("the cache container is gone after the exit");
    assert_eq!(
        (after.id.as_str(), after.status.as_str()),
        (cache.id.as_str(), "running")
    );
    assert_eq!(
        st.s.docker(&format!("volume inspect -f '{{{{.Name}}}}' {CACHE}")),
        CACHE,
        "the cache's volume"
    );
    // And it serves: a registry's answer to `/v2/`, from the box (where the bridge is).
    let v2 =
        st.s.rig
            .b
            .output(st.s.rig.b.command("/bin/busybox").args([
                "wget",
                "-q",
                "-O",
                "-",
                &format!("{url}/v2/"),
            ]))
            .unwrap();
    assert!(
        v2.status.success() && String::from_utf8_lossy(&v2.stdout).trim() == "{}",
        "{v2:?}\n{}",
        st.s.logs(CACHE)
    );
    let sets = st.ctl(|c| async move { c.scale_sets().await }).unwrap();
    assert!(sets.iter().all(|s| s.session.is_none()), "{sets:?}");
}

/// SCALE_MIN_RUNNERS=1 keeps one runner warm; one that dies before a job is replaced and its
/// runner deleted; a controller SIGKILLed and started again recovers its session at once (the
/// kept session id) and adopts the running container, removes an exited one and deletes a
/// runner of its name that no container backs.
#[test]
fn a_warm_runner_is_kept_replaced_when_it_dies_and_adopted_after_a_crash() {
    let Some(_serial) = ready("scale: warm pool and adoption") else {
        return;
    };
    let st = Stand::start(FakeConfig::default());
    let mut env = st.settings("scale-b");
    env.insert("SCALE_MIN_RUNNERS".into(), "1".into());
    let c = st.controller(&env, "b1.log");
    st.until(&c, "one warm runner", LIMIT, || {
        st.running("scale-b").len() == 1 && st.runner_names().len() == 1
    });
    let first = st.running("scale-b")[0].clone();
    let first_runner = st.runner_names()[0].clone();
    // It dies before any job: replaced, and its runner deleted at GitHub.
    st.s.docker(&format!("kill {first}"));
    st.until(&c, "the dead runner replaced", LIMIT, || {
        let r = st.running("scale-b");
        let names = st.runner_names();
        r.len() == 1
            && r[0] != first
            && names.len() == 1
            && names[0] != first_runner
            && !st.ours("scale-b").contains(&first)
    });
    // A job takes the warm runner, and another one is warm after it.
    let job = st.queue("warm", &["scale-b"], &["echo warm"]);
    st.until(&c, "the job done", LIMIT, || st.done(job.id));
    succeeded(&st, &job, &c);
    let took = st.job(job.id).runner_id;
    st.until(&c, "one warm runner again, not the job's", LIMIT, || {
        let runners = st.s.rig.runners();
        st.ours("scale-b").len() == 1
            && st.running("scale-b").len() == 1
            && runners.len() == 1
            && Some(runners[0].id) != took
    });

    // A crash: SIGKILL, with three warm runners (A, B, C). While the controller is down, A's
    // container exits, B's is removed (its runner stays registered at GitHub), C's runs on;
    // and a runner of another name that merely starts like the set's is registered.
    let mut env3 = env.clone();
    env3.insert("SCALE_MIN_RUNNERS".into(), "3".into());
    c.signal(Signal::SIGKILL);
    let (_, first_log) = c.wait(LIMIT);
    let c = st.controller(&env3, "b2.log");
    st.until(&c, "three warm runners", LIMIT, || {
        st.ours("scale-b").len() == 3
            && st.running("scale-b").len() == 3
            && st.runner_names().len() == 3
    });
    c.signal(Signal::SIGKILL);
    let _ = c.wait(LIMIT);
    let warm = st.running("scale-b");
    assert_eq!(warm.len(), 3, "{}\n{first_log}", st.s.docker("ps --all"));
    let name_of = |id: &str| {
        st.s.docker(&format!(
            "inspect -f '{{{{index .Config.Labels \"sysrunner.runner-name\"}}}}' {id}"
        ))
    };
    let (a, b, kept) = (warm[0].clone(), warm[1].clone(), warm[2].clone());
    let (a_name, b_name) = (name_of(&a), name_of(&b));
    st.s.docker(&format!("stop -t 1 {a}"));
    st.s.docker(&format!("rm -f {b}"));
    let foreign = st
        .ctl(|c| async move {
            c.create_runner(&NewRunner {
                scope: "repos/octo-org/octo-repo".into(),
                name: "scale-b-gpu-deadbeef".into(),
                labels: vec![],
                runner_group_id: None,
                ephemeral: true,
            })
            .await
        })
        .unwrap();
    assert!(st.runner_names().contains(&b_name));
    let c = st.controller(&env3, "b3.log");
    st.until(&c, "the session open again", LIMIT, || {
        c.log().contains("message session open")
    });
    st.until(
        &c,
        "A and B gone, C adopted, two new warm runners",
        LIMIT,
        || {
            let names = st.runner_names();
            let running = st.running("scale-b");
            !names.contains(&a_name)
                && !names.contains(&b_name)
                && running.len() == 3
                && running.contains(&kept)
                && !st.ours("scale-b").contains(&a)
        },
    );
    let log = c.log();
    assert!(log.contains("adopted a running runner container"), "{log}");
    assert!(log.contains("removed a stopped runner container"), "{log}");
    assert!(
        log.contains("deleted a runner an earlier run left without a container"),
        "{log}"
    );
    // The earlier session was deleted through its kept id, not waited out (30 s a try).
    assert!(log.contains("an earlier run left"), "{log}");
    assert!(
        !log.contains("already has an active message session"),
        "{log}"
    );
    assert!(
        st.runner_names().contains(&foreign.name),
        "a runner not of this scale set was deleted: {log}"
    );
    let foreign = foreign.name;
    let job = st.queue("after-crash", &["scale-b"], &["echo adopted"]);
    st.until(&c, "a job after the crash done", LIMIT, || st.done(job.id));
    succeeded(&st, &job, &c);
    c.signal(Signal::SIGTERM);
    let (code, log) = c.wait(LIMIT);
    assert_eq!(code, Some(0), "{log}");
    assert!(
        st.ours("scale-b").is_empty(),
        "SIGTERM removed the warm runner"
    );
    assert_eq!(
        st.runner_names(),
        vec![foreign],
        "only the foreign runner is left"
    );
}

/// SIGTERM while a job runs: no new job is taken, the busy runner finishes (DRAIN_TIMEOUT), then
/// the controller exits 0 with nothing left; with --delete-scale-set the scale set goes too.
#[test]
fn sigterm_while_busy_lets_the_job_finish() {
    let Some(_serial) = ready("scale: drain") else {
        return;
    };
    let st = Stand::start(FakeConfig::default());
    let mut env = st.settings("scale-c");
    env.insert("DRAIN_TIMEOUT".into(), "60s".into());
    let log = st.dir.path().join("c.log");
    let child =
        st.s.rig
            .spawn_in_box(
                &st.s.rig.b.sysrunner_in_box(),
                &["scale", "--delete-scale-set"],
                &env,
                &log,
            )
            .unwrap();
    let c = Controller { child, log };
    let job = st.queue("long", &["scale-c"], &["sleep 8", "echo finished"]);
    st.until(&c, "the job running", LIMIT, || {
        st.job(job.id).status == JobStatus::InProgress
    });
    c.signal(Signal::SIGTERM);
    st.until(&c, "draining with the job busy", LIMIT, || {
        c.log()
            .lines()
            .any(|l| l.contains("\"draining\"") && l.contains("\"busy\":1"))
    });
    assert_eq!(st.job(job.id).status, JobStatus::InProgress, "{}", c.log());
    // No new job is taken once SIGTERM came.
    let late = st.queue("late", &["scale-c"], &["echo too late"]);
    let (code, log) = c.wait(LIMIT);
    assert_eq!(st.job(late.id).status, JobStatus::Queued, "{log}");
    assert_eq!(code, Some(0), "{log}");
    let j = st.job(job.id);
    assert_eq!(j.result, Some(JobResult::Succeeded), "{}\n{log}", j.output);
    assert!(st.ours("scale-c").is_empty());
    assert!(st.runner_names().is_empty());
    let sets = st.ctl(|c| async move { c.scale_sets().await }).unwrap();
    assert!(sets.is_empty(), "--delete-scale-set: {sets:?}");
}

/// Generating JIT configs fails for a while (503s past the client's retries): the controller
/// backs off, counts the failures, and the job still runs once the service answers.
#[test]
fn a_5xx_burst_on_jit_configs_backs_off_and_recovers() {
    let Some(_serial) = ready("scale: JIT faults") else {
        return;
    };
    let st = Stand::start(FakeConfig::default());
    let mut env = st.settings("scale-d");
    env.insert("SCALE_LISTEN".into(), METRICS.into());
    env.insert("API_DEADLINE".into(), "5s".into());
    env.insert("API_TIMEOUT".into(), "2s".into());
    st.ctl(|c| async move {
        c.add_fault(&FaultRule {
            method: "POST".into(),
            path: "*generatejitconfig*".into(),
            count: 8,
            fault: Fault::ServerError { status: 503 },
        })
        .await
    })
    .unwrap();
    let c = st.controller(&env, "d.log");
    let job = st.queue("through-faults", &["scale-d"], &["echo recovered"]);
    st.until(&c, "the job done", Duration::from_secs(180), || {
        st.done(job.id)
    });
    succeeded(&st, &job, &c);
    let faults = st.ctl(|c| async move { c.faults().await }).unwrap();
    assert!(faults.iter().all(|f| f.remaining == 0), "{faults:?}");
    assert!(
        st.metric("sysrunner_scale_container_start_failures_total")
            .unwrap_or(0.0)
            >= 1.0,
        "{}",
        c.log()
    );
    st.until(&c, "nothing left", LIMIT, || {
        st.ours("scale-d").is_empty() && st.runner_names().is_empty()
    });
    c.signal(Signal::SIGTERM);
    let (code, log) = c.wait(LIMIT);
    assert_eq!(code, Some(0), "{log}");
    // SCALE_CACHE=auto, no cache container and SCALE_CACHE_IMAGE (registry:2) not on the host:
    // runners pull directly, warned of once however many starts looked again; nothing is made.
    let warned = log
        .lines()
        .filter(|l| l.contains("SCALE_CACHE_IMAGE=registry:2 is not on this host"))
        .count();
    assert_eq!(warned, 1, "{log}");
    assert!(st.cache().is_none(), "{}", st.s.docker("ps --all"));
}

/// Two controllers (two scale sets, one label) share the queue: every job runs once.
#[test]
fn two_controllers_with_one_label_share_the_queue() {
    let Some(_serial) = ready("scale: two controllers") else {
        return;
    };
    let st = Stand::start(FakeConfig::default());
    let mut a = st.settings("scale-e1");
    a.insert("RUNNER_LABELS".into(), "shared".into());
    a.insert(
        "SCALE_STATE_DIR".into(),
        "/var/lib/sysrunner/scale-e1".into(),
    );
    let mut b = st.settings("scale-e2");
    b.insert("RUNNER_LABELS".into(), "shared".into());
    b.insert(
        "SCALE_STATE_DIR".into(),
        "/var/lib/sysrunner/scale-e2".into(),
    );
    let ca = st.controller(&a, "e1.log");
    let cb = st.controller(&b, "e2.log");
    st.until(&ca, "both scale sets", LIMIT, || {
        st.ctl(|c| async move { c.scale_sets().await })
            .unwrap()
            .iter()
            .filter(|s| s.session.is_some())
            .count()
            == 2
    });
    let jobs: Vec<Job> = (0..4)
        .map(|i| st.queue(&format!("shared-{i}"), &["shared"], &["echo shared"]))
        .collect();
    st.until(&ca, "four jobs done", LIMIT, || {
        jobs.iter().all(|j| st.done(j.id))
    });
    for j in &jobs {
        succeeded(&st, j, &ca);
    }
    // Each job ran once, by a runner of the scale set that acquired it.
    let sets = st.ctl(|c| async move { c.scale_sets().await }).unwrap();
    let by_id: BTreeMap<u64, String> = sets.iter().map(|s| (s.id, s.name.clone())).collect();
    let mut runners = Vec::new();
    for j in &jobs {
        let j = st.job(j.id);
        let set = j
            .scale_set_id
            .and_then(|id| by_id.get(&id))
            .unwrap_or_else(|| panic!("{j:?}"));
        assert!(set == "scale-e1" || set == "scale-e2", "{j:?}");
        runners.push(j.runner_id.unwrap());
    }
    runners.sort();
    runners.dedup();
    assert_eq!(runners.len(), 4, "one runner per job");
    st.until(&ca, "nothing left", LIMIT, || {
        st.ours("scale-e1").is_empty()
            && st.ours("scale-e2").is_empty()
            && st.runner_names().is_empty()
    });
    ca.signal(Signal::SIGTERM);
    cb.signal(Signal::SIGTERM);
    assert_eq!(ca.wait(LIMIT).0, Some(0));
    assert_eq!(cb.wait(LIMIT).0, Some(0));
}

/// GitHub refuses the image's runner version: the runner exits 7, the controller starts no
/// more runners and says so in its log, `/metrics` and `/healthz`.
#[test]
fn a_refused_runner_version_stops_scaling_up() {
    let Some(_serial) = ready("scale: refused version") else {
        return;
    };
    let st = Stand::start(FakeConfig {
        min_runner_version: "9.999.0".into(),
        ..FakeConfig::default()
    });
    let mut env = st.settings("scale-f");
    env.insert("SCALE_LISTEN".into(), METRICS.into());
    env.insert("SCALE_MIN_RUNNERS".into(), "1".into());
    let c = st.controller(&env, "f.log");
    st.until(&c, "the refusal seen", LIMIT, || {
        st.metric("sysrunner_scale_version_refused") == Some(1.0)
    });
    let health = st.http("/healthz");
    assert!(health.is_err(), "{health:?}");
    assert!(c.log().contains("exit 7"), "{}", c.log());
    // Nothing new is started: one JIT config was made, for the refused runner, and no other.
    let jits = || {
        st.s.rig
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.contains("generatejitconfig"))
            .count()
    };
    assert_eq!(jits(), 1);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(jits(), 1, "{}", c.log());
    assert!(st.ours("scale-f").is_empty(), "{}", st.s.docker("ps --all"));
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait(LIMIT).0, Some(0));
}

/// SCALE_CACHE=off: no cache container is made, and a runner gets no DOCKER_REGISTRY_CACHE. Then
/// a stopped container of SCALE_CACHE_NAME (as compose.scale.yml's `cache` service leaves it, on
/// a network of its own) is started, connected to SCALE_NETWORK and used, not recreated, and it
/// is still running after the controller's exit.
#[test]
fn a_stopped_cache_is_started_and_used_and_off_means_no_cache() {
    let Some(_serial) = ready("scale: the pull-through cache") else {
        return;
    };
    let st = Stand::start(FakeConfig::default());
    st.s.import_cache_image()
        .unwrap_or_else(|e| panic!("cache image: {e}"));
    let mut env = st.settings("scale-g");
    env.insert("SCALE_MIN_RUNNERS".into(), "1".into());
    env.insert("SCALE_CACHE_IMAGE".into(), CACHE_IMAGE.into());
    env.insert("SCALE_CACHE".into(), "off".into());
    let warm = |c: &Controller| {
        st.until(c, "one warm runner", LIMIT, || {
            st.running("scale-g").len() == 1
        });
        st.running("scale-g")[0].clone()
    };
    let c = st.controller(&env, "g1.log");
    let runner = warm(&c);
    assert_eq!(st.cache_env(&runner), Some(None), "{}", c.log());
    assert!(st.cache().is_none(), "SCALE_CACHE=off made a cache");
    c.signal(Signal::SIGTERM);
    let (code, log) = c.wait(LIMIT);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("through no cache: SCALE_CACHE=off"), "{log}");

    st.s.docker("network create scale-g-cache");
    let made = st.s.docker(&format!(
        "create --name {CACHE} --network scale-g-cache --label com.docker.compose.service=cache {CACHE_IMAGE}"
    ));
    env.insert("SCALE_CACHE".into(), "auto".into());
    let c = st.controller(&env, "g2.log");
    let runner = warm(&c);
    let cache = st.cache().expect("the cache container is gone");
    assert_eq!(cache.id, made, "recreated\n{}", c.log());
    assert_eq!(cache.status, "running", "{cache:?}");
    assert!(!cache.bridge_ip.is_empty(), "not connected: {cache:?}");
    assert_eq!(
        st.cache_env(&runner),
        Some(Some(format!("http://{}:5000", cache.bridge_ip))),
        "{}",
        c.log()
    );
    let log = c.log();
    assert!(log.contains("started the stopped cache container"), "{log}");
    assert!(log.contains("connected the cache container"), "{log}");
    c.signal(Signal::SIGTERM);
    let (code, log) = c.wait(LIMIT);
    assert_eq!(code, Some(0), "{log}");
    assert!(st.ours("scale-g").is_empty(), "{log}");
    let after = st
        .cache()
        .expect("the cache container is gone after the exit");
    assert_eq!((after.id, after.status), (made, "running".to_string()));
}

/// `docker compose down -v`, which README prescribes for the privileged file, against a real
/// dockerd: the runner's anonymous `/var/lib/docker` volume goes, the image cache's external
/// volume stays with its layers. The images are the rig's, tagged with the compose file's names
/// (nothing is pulled); `up --no-start` makes the containers and volumes as `up` would.
#[test]
fn compose_down_v_removes_the_runners_volume_and_keeps_the_caches() {
    let needs = [NEEDS, &[Need::Compose]].concat();
    if !testkit::require("compose down -v", &needs) {
        return;
    }
    let _serial = testkit::serial();
    let st = Stand::start(FakeConfig::default());
    st.s.import_cache_image().unwrap_or_else(|e| panic!("{e}"));
    st.s.docker(&format!("tag {CACHE_IMAGE} registry:2"));
    // The privileged image declares /var/lib/docker a volume: each replica gets its own.
    let c = st.s.docker(&format!("create {IMAGE}"));
    st.s.docker(&format!(
        "commit --change 'VOLUME [\"/var/lib/docker\"]' {c} ghcr.io/sysrunner/sysrunner:0.1.0-privileged"
    ));
    st.s.docker(&format!("rm {c}"));
    st.s.docker(&format!("volume create {CACHE}"));
    st.s.docker(&format!(
        "run --rm -v {CACHE}:/var/lib/registry --entrypoint /bin/sh {CACHE_IMAGE} -c 'echo layer > /var/lib/registry/kept'"
    ));
    // Compose reads the project here and hands dockerd absolute paths to bind (the secrets),
    // which dockerd resolves in the box: the project is made at the same path in both, /tmp
    // here and the box's own /tmp.
    let name = format!("sysrunner-downv-{}", std::process::id());
    let project = std::path::Path::new("/tmp").join(&name);
    let _gone = Removed(project.clone());
    for dir in [project.clone(), st.s.rig.b.paths().tmp.join(&name)] {
        std::fs::create_dir_all(dir.join("secrets")).unwrap();
        std::fs::copy(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("compose.privileged.yml"),
            dir.join("compose.privileged.yml"),
        )
        .unwrap();
        for f in ["access_token", "dockerhub_username", "dockerhub_token"] {
            std::fs::write(dir.join("secrets").join(f), "").unwrap();
        }
    }
    let compose = |args: &[&str]| {
        let out = std::process::Command::new("docker-compose")
            .current_dir(&project)
            .env("DOCKER_HOST", format!("unix://{}", st.s.socket().display()))
            .args(["-p", "downv", "-f", "compose.privileged.yml"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("docker-compose (pip install docker-compose): {e}"));
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // `up --no-start` exits 0 even when a container cannot be made.
        assert!(
            out.status.success() && !said.contains("Error"),
            "docker-compose {args:?}: {said}"
        );
        said
    };
    // Without the cache (`--scale cache=0`): the runner is made all the same.
    compose(&["up", "--no-start", "--pull", "never", "--scale", "cache=0"]);
    let names = st.s.docker("ps -a --format '{{.Names}}'");
    assert_eq!(names, "downv-runner-1", "only the runner: {names}");
    compose(&["down", "-v"]);
    let up = compose(&["up", "--no-start", "--pull", "never"]);
    let volumes = || -> Vec<String> {
        let mut v: Vec<String> =
            st.s.docker("volume ls -q")
                .lines()
                .map(String::from)
                .collect();
        v.sort();
        v
    };
    let made = volumes();
    assert!(
        made.len() == 2 && made.contains(&CACHE.to_string()),
        "the cache's volume and the runner's anonymous one: {made:?}\n{up}\n{}\n{}",
        st.s.docker("ps -a"),
        st.s.docker("image inspect --format '{{json .Config.Volumes}}' ghcr.io/sysrunner/sysrunner:0.1.0-privileged")
    );
    compose(&["down", "-v"]);
    assert_eq!(volumes(), [CACHE], "down -v kept only the external volume");
    let kept = st.s.docker(&format!(
        "run --rm -v {CACHE}:/var/lib/registry --entrypoint /bin/sh {CACHE_IMAGE} -c 'cat /var/lib/registry/kept'"
    ));
    assert_eq!(kept, "layer");
    assert!(
        st.s.docker("ps -aq").is_empty(),
        "down removed the containers"
    );
}

/// Removes a directory when dropped.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
