//! The dockerd module live, in both boxes: the probe's verdict and plan, then `sysrunner
//! dockerd-check` (prepare, start, ping, stop through `src/dockerd`, exactly as `run` does) runs a
//! locally imported image, makes a network with the configured MTU, and leaves no process behind.
//! Needs root and dockerd; skips (or fails in CI) through `testkit::require`.

use std::time::Instant;
use sysrunner_testkit::{self as testkit, BoxKind, Need, TestBox, image};

const EXE: &str = env!("CARGO_BIN_EXE_sysrunner");
const NEEDS: [Need; 6] = sysrunner_testkit::gate::BOX_WITH_DOCKERD;

fn probe_json(b: &TestBox) -> serde_json::Value {
    let out = b
        .output(b.command(b.sysrunner_in_box()).args(["probe", "--json"]))
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "probe --json: {e}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn dockerd_through_the_module(kind: BoxKind, runtime: &str, profile: &str) {
    if !testkit::require("dockerd_live", &NEEDS) {
        return;
    }
    let _serial = testkit::serial();
    let b = TestBox::builder(kind).sysrunner(EXE).start().unwrap();

    let p = probe_json(&b);
    assert_eq!(p["runtime"], runtime, "{p:#}");
    assert_eq!(p["dockerd"]["profile"], profile);
    assert_eq!(
        p["dockerd"]["storage_driver"], "overlay2",
        "the box's data root is ext4"
    );
    // containerd on the box's PATH: sysrunner starts it and hands its socket to dockerd.
    assert_eq!(
        p["dockerd"]["containerd"]["socket"], "/var/run/docker/containerd/containerd.sock",
        "{p:#}"
    );
    assert_eq!(
        p["dockerd"]["daemon_json"]["containerd"], p["dockerd"]["containerd"]["socket"],
        "{p:#}"
    );
    assert_eq!(
        p["live"]["mount_error"],
        serde_json::Value::Null,
        "a tmpfs mount works in the box"
    );
    assert_eq!(
        p["live"]["cgroup_error"],
        serde_json::Value::Null,
        "a cgroup can be made in the box"
    );

    image::write_busybox_rootfs(&b.paths().tmp.join("busybox.tar")).unwrap();
    let script = format!(
        "set -e; docker import /tmp/busybox.tar {img} >/dev/null; \
         docker run --rm {img} busybox echo container-ran; \
         docker network create n1 >/dev/null; \
         echo mtu=$(docker run --rm --network n1 {img} cat /sys/class/net/eth0/mtu)",
        img = image::IMAGE
    );
    let t = Instant::now();
    let out = b
        .output(
            b.command(b.sysrunner_in_box())
                .env("DOCKER_MTU", "1400")
                .args(["dockerd-check", "--", "sh", "-c", &script]),
        )
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("runtime: {runtime}")), "{stdout}");
    assert!(stdout.contains("dockerd: ready in"), "{stdout}");
    assert!(
        stdout.contains("containerd started by sysrunner"),
        "{stdout}"
    );
    assert!(stdout.contains("container-ran"), "{stdout}");
    assert!(
        stdout.contains("mtu=1400"),
        "a docker network create network has the configured MTU: {stdout}"
    );
    assert!(stdout.contains("processes left: 0"), "{stdout}");
    assert!(
        b.pids().unwrap().is_empty(),
        "stop left processes in the box: {:?}",
        b.pids()
    );
    assert!(
        b.paths().var_lib_docker.join(".sysrunner.lock").exists(),
        "dockerd ran on the box's data root under its lock"
    );
    eprintln!("{kind:?}: dockerd-check took {:?}\n{stdout}", t.elapsed());

    // A second dockerd in the same network namespace (as in a Kubernetes pod, where a restarted
    // container keeps the pod's): what the first left there (its chains, docker0, n1's bridge)
    // is removed before it starts, and Docker's own rules beside them stay.
    let links = |b: &testkit::TestBox| -> Vec<String> {
        b.run_shell("ip -o link show | cut -d: -f2 | tr -d ' '")
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let left = links(&b);
    let bridges: Vec<&String> = left.iter().filter(|l| l.starts_with("br-")).collect();
    assert!(
        left.contains(&"docker0".to_string()) && bridges.len() == 1,
        "the first dockerd leaves docker0 and n1's bridge behind: {left:?}"
    );
    assert!(
        b.run_shell("iptables-save")
            .unwrap()
            .contains(":DOCKER-USER")
    );
    b.run_shell(
        "iptables -t nat -N DOCKER_OUTPUT && iptables -t nat -A OUTPUT -d 127.0.0.11/32 -j DOCKER_OUTPUT",
    )
    .unwrap();
    let out = b
        .output(
            b.command(b.sysrunner_in_box())
                .env("DOCKER_MTU", "1400")
                .env("LOG_LEVEL", "info")
                .args(["dockerd-check", "--", "true"]),
        )
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("removed what an earlier dockerd left in this network namespace")
            && !stderr.contains("namespace: 0 rule"),
        "the first dockerd's chains and bridges were removed: {stderr}"
    );
    let now = links(&b);
    assert!(
        !now.contains(bridges[0]),
        "n1's bridge from the first dockerd is gone: {now:?}"
    );
    let rules = b.run_shell("iptables-save -t nat").unwrap();
    assert!(
        rules.contains("-A OUTPUT -d 127.0.0.11/32 -j DOCKER_OUTPUT"),
        "Docker's embedded DNS chain is not dockerd's: {rules}"
    );
}

#[test]
fn dockerd_starts_runs_a_container_and_stops_clean_in_a_sysbox_like_box() {
    // No sysboxfs in the box: the verdict is `userns`, run like sysbox.
    dockerd_through_the_module(BoxKind::SysboxLike, "userns", "namespaced");
}

#[test]
fn dockerd_starts_runs_a_container_and_stops_clean_in_a_privileged_like_box() {
    dockerd_through_the_module(BoxKind::PrivilegedLike, "privileged", "privileged");
}

#[test]
fn a_second_dockerd_on_the_same_data_root_is_refused() {
    if !testkit::require("dockerd_live", &NEEDS) {
        return;
    }
    let _serial = testkit::serial();
    let b = TestBox::builder(BoxKind::PrivilegedLike)
        .sysrunner(EXE)
        .start()
        .unwrap();
    // The first keeps dockerd up while the second tries the same data root.
    let mut first = b
        .command(b.sysrunner_in_box())
        .env("DOCKER_MTU", "1400")
        .args([
            "dockerd-check",
            "--",
            "sh",
            "-c",
            "touch /tmp/up; sleep 600",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let up = b.paths().tmp.join("up");
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    while !up.exists() && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(up.exists(), "the first dockerd came up");
    let out = b
        .output(
            b.command(b.sysrunner_in_box())
                .env("DOCKER_MTU", "1400")
                .env("DOCKER_DATA", "keep")
                .args(["dockerd-check"]),
        )
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(75), "{stdout}");
    assert!(
        stdout.contains("still running") || stdout.contains("locked"),
        "{stdout}"
    );
    let _ = first.kill();
    let _ = first.wait();
}

/// A registry's answer to `/v2/` on 127.0.0.1 inside the box's network namespace (a thread of
/// this process joined to it), given once `ready` holds for the request: its port.
fn registry_stub_in(b: &TestBox, ready: impl Fn() -> bool + Send + Sync + 'static) -> u16 {
    use std::io::{Read, Write};
    let ns = std::fs::File::open(format!("/proc/{}/ns/net", b.pid())).unwrap();
    let ready = std::sync::Arc::new(ready);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        tx.send(l.local_addr().unwrap().port()).unwrap();
        for mut c in l.incoming().flatten() {
            let ready = ready.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let _ = c.read(&mut buf);
                let end = Instant::now() + std::time::Duration::from_secs(120);
                while !ready() && Instant::now() < end {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nDocker-Distribution-Api-Version: registry/2.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                );
            });
        }
    });
    rx.recv().unwrap()
}

/// DOCKER_REGISTRY_CACHE through `dockerd-check`, as `run` does it: a cache that answers at once
/// is in daemon.json when dockerd starts; one that answers only once dockerd is up (never before,
/// so the order holds on a slow machine) is put there afterwards and dockerd reloads it; with
/// DOCKER_REGISTRY_MIRRORS set, the cache is not asked.
#[test]
fn the_registry_cache_becomes_dockerds_mirror_before_or_after_its_start() {
    if !testkit::require("dockerd_live", &NEEDS) {
        return;
    }
    let _serial = testkit::serial();
    let b = TestBox::builder(BoxKind::SysboxLike)
        .sysrunner(EXE)
        .start()
        .unwrap();
    // Mirrors as dockerd reports them, asked once: after a reload, dockerd-check (as `run`) goes
    // on only once dockerd lists the mirror.
    let mirrors = "echo mirrors=$(docker info --format '{{json .RegistryConfig.Mirrors}}')";
    let check = |port: u16, extra: &[(&str, &str)]| {
        let mut cmd = b.command(b.sysrunner_in_box());
        cmd.env("DOCKER_MTU", "1400")
            .env("LOG_LEVEL", "info")
            .env("DOCKER_REGISTRY_CACHE", format!("http://127.0.0.1:{port}"))
            .env("DOCKER_REGISTRY_CACHE_TIMEOUT", "60s");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = b
            .output(cmd.args(["dockerd-check", "--", "sh", "-c", mirrors]))
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        );
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        (stdout, stderr)
    };

    let at_once = registry_stub_in(&b, || true);
    let (stdout, stderr) = check(at_once, &[]);
    let want = format!("mirrors=[\"http://127.0.0.1:{at_once}/\"]");
    assert!(stdout.contains(&want), "{want} in\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("registry: pulls Docker Hub images through the cache"),
        "{stdout}"
    );
    assert!(
        !stderr.contains("reloaded"),
        "known before the start: {stderr}"
    );

    // Through the box's own mount namespace (its /run is a tmpfs of its own); /var/run is an
    // absolute link, which would resolve against this process's root.
    let socket = format!("/proc/{}/root/run/docker.sock", b.pid());
    let late = registry_stub_in(&b, move || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    let (stdout, stderr) = check(late, &[]);
    let want = format!("mirrors=[\"http://127.0.0.1:{late}/\"]");
    assert!(stdout.contains(&want), "{want} in\n{stdout}\n{stderr}");
    assert!(
        stderr.contains(
            "the registry cache answered after dockerd's start: dockerd reloaded its daemon.json"
        ),
        "{stderr}"
    );

    let (stdout, _) = check(
        at_once,
        &[("DOCKER_REGISTRY_MIRRORS", "https://mirror.corp.example")],
    );
    assert!(
        stdout.contains("mirrors=[\"https://mirror.corp.example/\"]")
            && stdout.contains("registry: pulls through DOCKER_REGISTRY_MIRRORS"),
        "{stdout}"
    );
}
