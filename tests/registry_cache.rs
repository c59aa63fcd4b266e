//! `DOCKER_REGISTRY_CACHE`, the shared pull-through image cache, with the real binary in both
//! boxes: a cache (Debian's docker-registry in proxy mode, in the fake GitHub's namespace every box
//! routes to) in front of an upstream registry holding a four-layer test image (in a namespace of
//! its own that only the cache reaches; see `sysrunner_testkit::registry`). The first life pulls
//! through the cache from the upstream; the second, a fresh inner dockerd with no image, pulls the
//! same image and the upstream serves no blob. A cache that refuses connections, or one that
//! accepts and never answers, is skipped: the life runs its job and pulls directly. Needs root,
//! dockerd and docker-registry; skips (or fails in CI) otherwise. Asserts no timing.

// Not every helper of the shared module is used here.
#[allow(dead_code)]
mod lifecycle_support;

use lifecycle_support::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use sysrunner_testkit::fake_github::{FakeConfig, JobResult};
use sysrunner_testkit::gate::{self, Verdict};
use sysrunner_testkit::registry::{self, Cache, Hanging, IMAGE, Upstream};
use sysrunner_testkit::{self as testkit, BoxKind};

const LIFE: Duration = Duration::from_secs(120);
const NAME: &str = "sysrunner-cache";

fn ready(test: &str) -> Option<testkit::lock::Lock> {
    let mut missing: Vec<String> = NEEDS.iter().filter_map(|n| gate::missing(*n)).collect();
    missing.extend(registry::missing());
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    match gate::verdict(&missing, ci) {
        Verdict::Run => Some(testkit::serial()),
        Verdict::Skip(why) => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "skipping {test}: {why} (CI=true would fail instead)"
            );
            None
        }
        Verdict::Fail(why) => panic!("{test} cannot run in CI: {why}"),
    }
}

/// The rig's settings with the cache at `cache` and the JSON log the fields are read from.
fn settings(r: &Runner, cache: &str) -> BTreeMap<String, String> {
    let mut env = r.settings(NAME);
    env.insert("DOCKER_REGISTRY_CACHE".into(), cache.into());
    env.insert("LOG_FORMAT".into(), "json".into());
    env
}

/// The first line of a JSON log whose `registry` field is `value` (at the top or in `fields`).
fn registry_line(log: &str, value: &str) -> Option<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| {
            let f = v.get("fields").unwrap_or(v);
            f.get("registry").and_then(Value::as_str) == Some(value)
                || v.get("registry").and_then(Value::as_str) == Some(value)
        })
}

fn field<'a>(line: &'a Value, name: &str) -> Option<&'a str> {
    line.get(name)
        .or_else(|| line.get("fields").and_then(|f| f.get(name)))
        .and_then(Value::as_str)
}

/// What the job prints for the inner dockerd's mirrors: `mirrors=<JSON list>`.
const MIRRORS: &str = "echo mirrors=$(docker info --format '{{json .RegistryConfig.Mirrors}}')";
/// What the job prints for the life's health state (the image's HEALTHCHECK reads it).
const STATE: &str = "echo state=$(cat /run/sysrunner/state.json)";
/// The job fails unless the inner dockerd starts with no image.
const NO_IMAGES: &str = "test -z \"$(docker images -q)\" && echo no-images-at-start";

/// One life with a job of `steps`: it exits 0 and the job succeeds. Its log and the job's output.
fn life_with_job(
    r: &Runner,
    env: &BTreeMap<String, String>,
    job: &str,
    steps: &[&str],
) -> (String, String) {
    let queued = r.queue(NAME, job, steps);
    let (code, log) = r.life(env, LIFE);
    let done = r.job(queued.id);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        done.result,
        Some(JobResult::Succeeded),
        "job {job}:\n{}\nlog:\n{log}",
        done.output
    );
    r.assert_ended_clean(&log);
    (log, done.output)
}

fn cache_serves_the_second_life(up: &Upstream, kind: BoxKind) {
    let r = Runner::start(kind, FakeConfig::default());
    let (netns, ip) = registry::github_netns(&r).unwrap();
    // Fresh storage for each box kind, so that each one's first life goes to the upstream.
    let cache = Cache::start(up, &netns, ip).unwrap();
    // Nothing the box, the cache or the upstream sends can leave: the box's default route ends in
    // the fake's namespace, which has none, nor has the upstream's. And the box reaches the
    // upstream only through the cache (the upstream has no route back to it).
    for ns in [&netns, &up.netns()] {
        let out = registry::default_routes(ns).unwrap();
        assert!(out.is_empty(), "{}: {out:?}", ns.display());
    }
    let upstream = SocketAddr::from((registry::UPSTREAM_IP, registry::PORT));
    let box_netns = std::path::PathBuf::from(format!("/proc/{}/ns/net", r.b.pid()));
    assert!(
        !registry::reaches(&box_netns, upstream).unwrap(),
        "the box reaches the upstream"
    );
    assert!(
        registry::reaches(&netns, upstream).unwrap(),
        "the cache's namespace does not reach the upstream"
    );
    let env = settings(&r, cache.url());
    let layers = &up.image().layers;
    let layer_bytes: u64 = layers.iter().map(|l| l.size).sum();

    let before = up.served();
    let pull = format!("docker pull {IMAGE}");
    let (log, output) = life_with_job(
        &r,
        &env,
        "cold-pull",
        &[
            NO_IMAGES,
            MIRRORS,
            STATE,
            &pull,
            // The layers are whole: the image's own command lists the data layers' files.
            &format!("docker run --rm {IMAGE}"),
        ],
    );
    let cold = up.served() - before;
    assert!(output.contains("no-images-at-start"), "{output}");
    assert!(
        output.contains(&format!("mirrors=[\"{}/\"]", cache.url())),
        "the inner dockerd has no mirror {}:\n{output}\n{log}",
        cache.url()
    );
    for i in 0..3 {
        assert!(output.contains(&format!("{i}.bin")), "{output}");
    }
    let line =
        registry_line(&log, "cache").unwrap_or_else(|| panic!("no registry=cache line:\n{log}"));
    assert_eq!(field(&line, "cache"), Some(cache.url()), "{line}");
    assert!(registry_line(&log, "direct").is_none(), "{log}");
    assert!(
        cold.blob_gets >= layers.len() && cold.blob_bytes >= layer_bytes,
        "{kind:?}: the upstream served {cold:?} of {} layers, {layer_bytes} bytes:\n{}",
        layers.len(),
        up.log()
    );

    let before = (up.served(), cache.served());
    let (log, output) = life_with_job(&r, &env, "warm-pull", &[NO_IMAGES, &pull]);
    let warm = (up.served() - before.0, cache.served() - before.1);
    assert!(output.contains("no-images-at-start"), "{output}\n{log}");
    assert_eq!(
        warm.0.blob_gets,
        0,
        "{kind:?}: the upstream served blobs to the second life's pull:\n{}",
        up.log()
    );
    // Nor a manifest GET, which is what Docker Hub's pull rate limit counts (the cache only
    // HEADs the tag there).
    assert_eq!(
        warm.0.manifest_gets,
        0,
        "{kind:?}: the upstream served the second life's manifest:\n{}",
        up.log()
    );
    assert!(
        warm.1.blob_gets >= layers.len() && warm.1.blob_bytes >= layer_bytes,
        "{kind:?}: the cache served {:?}:\n{}",
        warm.1,
        cache.log()
    );
    eprintln!(
        "{kind:?}: cold {cold:?}, warm: upstream {:?}, cache {:?}",
        warm.0, warm.1
    );
}

#[test]
fn the_second_life_pulls_from_the_cache_and_the_upstream_serves_no_blob_in_both_boxes() {
    let Some(_serial) = ready("registry_cache") else {
        return;
    };
    let up = Upstream::start().unwrap();
    cache_serves_the_second_life(&up, BoxKind::SysboxLike);
    cache_serves_the_second_life(&up, BoxKind::PrivilegedLike);
}

/// A life whose cache is `url` (nothing there, or a listener that never answers): it runs its job
/// with no mirror, and says it pulls directly.
fn skipped(r: &Runner, url: &str, what: &str) {
    let env = settings(r, url);
    // Pulled directly, the image cannot come: the box's only route ends at the fake GitHub's
    // namespace, which forwards nothing, and its resolver knows no Docker Hub.
    let direct = format!(
        "if docker pull {IMAGE} >/tmp/pull 2>&1; then exit 1; fi; echo direct-pull-failed: $(tail -1 /tmp/pull)"
    );
    let (log, output) = life_with_job(r, &env, what, &[MIRRORS, STATE, &direct]);
    // From Docker Hub itself, which the box's resolver does not know.
    assert!(
        output.contains("direct-pull-failed") && output.contains("registry-1.docker.io"),
        "{what}: {output}"
    );
    assert!(
        output.contains("\"mode\":\"direct\""),
        "{what}: the health state says otherwise:\n{output}"
    );
    assert!(
        output.contains("mirrors=[]") || output.contains("mirrors=null"),
        "{what}: the inner dockerd has a mirror:\n{output}\n{log}"
    );
    let line = registry_line(&log, "direct")
        .unwrap_or_else(|| panic!("{what}: no registry=direct line:\n{log}"));
    assert!(
        registry_line(&log, "cache").is_none(),
        "{what}: {line}\n{log}"
    );
}

#[test]
fn a_cache_that_refuses_or_hangs_is_skipped_and_the_life_pulls_directly() {
    let Some(_serial) = ready("registry_cache") else {
        return;
    };
    for kind in [BoxKind::SysboxLike, BoxKind::PrivilegedLike] {
        let r = Runner::start(kind, FakeConfig::default());
        let (netns, ip) = registry::github_netns(&r).unwrap();
        // Nothing listens on this port in the fake's namespace.
        skipped(&r, &format!("http://{ip}:5999"), "refused");
        let hanging = Hanging::start(&netns, SocketAddr::from((ip, 5998))).unwrap();
        skipped(&r, &hanging.url, "hanging");
    }
}

/// The cache's `/v2/` answers 1.5 s late, after dockerd is up (it is in well under a second here)
/// and within `DOCKER_REGISTRY_CACHE_TIMEOUT` (5 s): the running dockerd takes the mirror (a
/// rewritten daemon.json and a reload), and the job's pull comes through the cache.
#[test]
fn a_cache_that_answers_after_dockerd_is_up_still_becomes_its_mirror() {
    let Some(_serial) = ready("registry_cache") else {
        return;
    };
    let up = Upstream::start().unwrap();
    let r = Runner::start(BoxKind::SysboxLike, FakeConfig::default());
    let (netns, ip) = registry::github_netns(&r).unwrap();
    let cache = Cache::start(&up, &netns, ip).unwrap();
    let target: SocketAddr = cache.url().trim_start_matches("http://").parse().unwrap();
    let slow = registry::Slow::start(&netns, SocketAddr::from((ip, 5997)), target).unwrap();
    let mut env = settings(&r, &slow.url);
    env.insert("DOCKER_REGISTRY_CACHE_TIMEOUT".into(), "5s".into());
    slow.delay_next(Duration::from_millis(1500));
    let before = cache.served();
    let (log, output) = life_with_job(
        &r,
        &env,
        "late-cache",
        &[MIRRORS, STATE, &format!("docker pull {IMAGE}")],
    );
    assert!(
        output.contains(&format!("mirrors=[\"{}/\"]", slow.url)),
        "the inner dockerd has no mirror {}:\n{output}\n{log}",
        slow.url
    );
    assert!(registry_line(&log, "cache").is_some(), "{log}");
    let served = cache.served() - before;
    assert!(
        served.blob_gets >= up.image().layers.len(),
        "the pull did not come through the cache: {served:?}\n{output}"
    );
    for l in log
        .lines()
        .filter(|l| l.contains("registry") || l.contains("reload"))
    {
        eprintln!("late cache: {l}");
    }
}
