//! The probe against captured and constructed trees (tests/fixtures/probe, whose README says how
//! each was made): each verdict, its reasons and the dockerd plan that follows. Pure: no root, no
//! live checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use sysrunner::assess::{self, Report};
use sysrunner::config::{DataPolicy, DockerSettings, ImageStore};
use sysrunner::dockerd::{Iptables, Plan, PreStep, Profile, StorageDriver, Version};
use sysrunner::probe::{self, Runtime};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/probe")
        .join(name)
}

fn docker(mtu: Option<u32>) -> DockerSettings {
    DockerSettings {
        dockerd: sysrunner::config::DockerdMode::On,
        image_store: sysrunner::config::ImageStore::GraphDriver,
        registry_mirrors: vec![],
        registry_cache: None,
        registry_cache_timeout: std::time::Duration::from_secs(2),
        mtu,
        data: DataPolicy::Ephemeral,
        ready_timeout: std::time::Duration::from_secs(60),
    }
}

fn report_for(name: &str, version: Option<Version>) -> Report {
    let facts = probe::read_facts(&fixture(name));
    assess::report(
        facts,
        None,
        &docker(Some(1400)),
        version,
        None,
        &BTreeMap::new(),
    )
}

const V26: Option<Version> = Some(Version {
    major: 26,
    minor: 1,
});

#[test]
fn sysbox_on_cgroup_v2_runs_dockerd_without_pre_steps() {
    let r = report_for("sysbox-v2", V26);
    assert_eq!(r.runtime, Runtime::Sysbox, "{:?}", r.reasons);
    assert!(
        r.reasons.iter().any(|x| x.contains("0 165536 65536")),
        "{:?}",
        r.reasons
    );
    assert!(
        r.reasons
            .iter()
            .any(|x| x.contains("sysboxfs mounted on /proc/sys"))
    );
    let p = r.dockerd.expect("a plan");
    assert_eq!(p.profile, Profile::Namespaced);
    assert!(p.pre_steps.is_empty());
    assert_eq!(p.storage_driver, StorageDriver::Overlay2, "ext4 data root");
    assert!(!p.raise_nofile);
    assert_eq!(
        p.daemon_json["exec-opts"][0],
        "native.cgroupdriver=cgroupfs"
    );
    assert!(r.remedy.is_none());
}

#[test]
fn sysbox_on_cgroup_v1() {
    let r = report_for("sysbox-v1", V26);
    assert_eq!(r.runtime, Runtime::Sysbox, "{:?}", r.reasons);
    assert_eq!(r.facts.cgroup.version, Some(probe::CgroupVersion::V1));
}

#[test]
fn sysbox_restricted_mode_is_unsupported() {
    let r = report_for("sysbox-restricted", V26);
    assert_eq!(r.runtime, Runtime::Unsupported);
    assert!(
        r.reasons.iter().any(|x| x.contains("restricted mode")),
        "{:?}",
        r.reasons
    );
    assert!(r.dockerd.is_none());
    assert!(r.remedy.unwrap().contains("sysbox-runc"));
}

#[test]
fn a_user_namespace_without_sysboxfs_is_userns_and_runs_like_sysbox() {
    let r = report_for("userns-v1", V26);
    assert_eq!(r.runtime, Runtime::Userns, "{:?}", r.reasons);
    assert!(r.reasons[0].contains("0 100000 65536"), "{:?}", r.reasons);
    assert_eq!(r.dockerd.unwrap().profile, Profile::Namespaced);
}

#[test]
fn privileged_on_cgroup_v1_mounts_securityfs_and_makes_root_shared() {
    let r = report_for("privileged-v1", V26);
    assert_eq!(r.runtime, Runtime::Privileged, "{:?}", r.reasons);
    let p = r.dockerd.unwrap();
    assert_eq!(p.profile, Profile::Privileged);
    assert_eq!(
        p.pre_steps,
        vec![PreStep::MountSecurityfs, PreStep::MakeRshared]
    );
    assert_eq!(p.env.get("container").map(String::as_str), Some("docker"));
    assert!(p.raise_nofile);
}

#[test]
fn privileged_on_cgroup_v2_nests_into_init_and_uses_fuse_overlayfs_on_an_overlay_root() {
    let r = report_for("privileged-v2", V26);
    assert_eq!(r.runtime, Runtime::Privileged);
    let p = r.dockerd.unwrap();
    assert_eq!(
        p.pre_steps[1],
        PreStep::NestCgroupV2 {
            into: "/sys/fs/cgroup/init".into(),
            controllers: "cpuset cpu io memory hugetlb pids rdma misc"
                .split(' ')
                .map(String::from)
                .collect(),
        }
    );
    assert_eq!(p.storage_driver, StorageDriver::FuseOverlayfs);
    assert!(p.notes.iter().any(|n| n.contains("overlayfs")));
    assert_eq!(p.iptables, Iptables::Legacy, "ip_tables_names lists tables");
}

const V29: Option<Version> = Some(Version {
    major: 29,
    minor: 1,
});

fn plan_with_store(name: &str, store: ImageStore, version: Option<Version>) -> Plan {
    let facts = probe::read_facts(&fixture(name));
    let docker = DockerSettings {
        image_store: store,
        ..docker(Some(1400))
    };
    assess::report(facts, None, &docker, version, None, &BTreeMap::new())
        .dockerd
        .expect("a plan")
}

/// Docker >= 29 puts a fresh data root (every life's) on the containerd image store unless
/// daemon.json says otherwise, so the plan always says which store it means.
#[test]
fn the_image_store_is_explicit_for_every_dockerd_version() {
    for version in [V26, V29, None] {
        let p = plan_with_store("sysbox-v2", ImageStore::GraphDriver, version);
        assert_eq!(
            p.daemon_json["features"]["containerd-snapshotter"], false,
            "{version:?}"
        );
        assert_eq!(p.daemon_json["storage-driver"], "overlay2");
        let p = plan_with_store("sysbox-v2", ImageStore::Containerd, version);
        assert_eq!(
            p.daemon_json["features"]["containerd-snapshotter"], true,
            "{version:?}"
        );
        assert_eq!(p.daemon_json["storage-driver"], "overlayfs", "{version:?}");
    }
    // On an overlay data root the containerd store has only its copying snapshotter.
    let p = plan_with_store("privileged-v2", ImageStore::Containerd, V29);
    assert_eq!(p.daemon_json["storage-driver"], "native");
    assert!(p.notes.iter().any(|n| n.contains("native snapshotter")));
    // dockerd 20 has no containerd store: the classic one, said in a note.
    let v20 = Some(Version {
        major: 20,
        minor: 10,
    });
    let p = plan_with_store("sysbox-v2", ImageStore::Containerd, v20);
    assert_eq!(p.daemon_json["features"]["containerd-snapshotter"], false);
    assert_eq!(p.daemon_json["storage-driver"], "overlay2");
    assert!(p.notes.iter().any(|n| n.contains(">= 24")));
}

#[test]
fn a_default_docker_container_is_unsupported_for_missing_capabilities_and_ro_cgroupfs() {
    let r = report_for("docker-default", V26);
    assert_eq!(r.runtime, Runtime::Unsupported);
    let all = r.reasons.join("\n");
    assert!(
        all.contains("CAP_SYS_ADMIN") && all.contains("CAP_NET_ADMIN"),
        "{all}"
    );
    assert!(
        !all.contains("CAP_CHOWN"),
        "default caps are present: {all}"
    );
    assert!(all.contains("read-only"), "{all}");
    assert!(r.remedy.unwrap().contains("compose.privileged.yml"));
}

#[test]
fn all_capabilities_with_read_only_cgroupfs_is_unsupported() {
    let r = report_for("allcaps-ro-cgroup", V26);
    assert_eq!(r.runtime, Runtime::Unsupported);
    assert_eq!(r.reasons.len(), 1, "{:?}", r.reasons);
    assert!(r.reasons[0].contains("cgroupfs is mounted read-only"));
}

#[test]
fn a_non_root_user_is_unsupported() {
    let r = report_for("nonroot", V26);
    assert_eq!(r.runtime, Runtime::Unsupported);
    assert!(
        r.reasons[0].contains("not root (uid 1000)"),
        "{:?}",
        r.reasons
    );
}

#[test]
fn a_host_is_refused_with_a_remedy() {
    let r = report_for("host", V26);
    assert_eq!(r.runtime, Runtime::Host);
    assert!(r.dockerd.is_none());
    assert!(r.remedy.unwrap().contains("runtimeClassName: sysbox-runc"));
}

#[test]
fn without_namespace_links_the_maps_decide() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture("sysbox-v2"), dir.path());
    std::fs::remove_dir_all(dir.path().join("proc/self/ns")).unwrap();
    let facts = probe::read_facts(dir.path());
    assert_eq!(facts.user_namespace.inode, None);
    assert_eq!(facts.user_namespace.initial, Some(false));
    let r = assess::report(facts, None, &docker(None), V26, None, &BTreeMap::new());
    assert_eq!(r.runtime, Runtime::Sysbox);
}

#[test]
fn mtu_goes_into_default_network_opts_only_for_dockerd_24_and_later() {
    let p = report_for("sysbox-v2", V26).dockerd.unwrap();
    assert_eq!(p.daemon_json["mtu"], 1400);
    assert_eq!(
        p.daemon_json["default-network-opts"]["bridge"]["com.docker.network.driver.mtu"],
        "1400"
    );
    let old = report_for(
        "sysbox-v2",
        Some(Version {
            major: 20,
            minor: 10,
        }),
    )
    .dockerd
    .unwrap();
    assert_eq!(old.daemon_json["mtu"], 1400);
    assert!(old.daemon_json.get("default-network-opts").is_none());
    assert!(
        old.notes.iter().any(|n| n.contains("keep MTU 1500")),
        "{:?}",
        old.notes
    );
}

#[test]
fn the_socket_is_unix_only_group_docker_without_tls() {
    let p = report_for("sysbox-v2", V26).dockerd.unwrap();
    assert_eq!(
        p.daemon_json["hosts"],
        serde_json::json!(["unix:///var/run/docker.sock"])
    );
    assert_eq!(p.daemon_json["group"], "docker");
    assert_eq!(p.daemon_json["tls"], false);
}

#[test]
fn probe_root_json_has_the_documented_fields_and_exit_codes() {
    for (name, code, runtime) in [
        ("sysbox-v2", 0, "sysbox"),
        ("docker-default", 78, "unsupported"),
        ("host", 78, "host"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sysrunner"))
            .env_clear()
            .args(["probe", "--json", "--root"])
            .arg(fixture(name))
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["runtime"], runtime);
        for key in ["reasons", "facts", "dockerd"] {
            assert!(v.get(key).is_some(), "{name}: no {key}");
        }
        assert!(v["live"].is_null(), "--root skips live checks");
    }
}

#[test]
fn probe_capture_then_root_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("cap");
    let run = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sysrunner"))
            .env_clear()
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[
        "probe".as_ref(),
        "--root".as_ref(),
        fixture("sysbox-v2").as_os_str(),
        "--capture".as_ref(),
        cap.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let again = run(&["probe".as_ref(), "--root".as_ref(), cap.as_os_str()]);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        String::from_utf8_lossy(&out.stdout)
    );
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        let ft = entry.file_type().unwrap();
        if ft.is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_tree(&entry.path(), &dest);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &dest).unwrap();
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// With a containerd installed, sysrunner starts it and dockerd is handed its socket (dockerd's
/// own start would dial it before it listens and back off for a second); its config keeps
/// dockerd's layout: the root under the data root, state and socket under /var/run/docker.
#[test]
fn an_installed_containerd_is_started_by_sysrunner_and_handed_to_dockerd() {
    let facts = probe::read_facts(&fixture("sysbox-v2"));
    let data_root = facts.data_root.path.clone();
    let r = assess::report(
        facts.clone(),
        None,
        &docker(Some(1400)),
        V26,
        Some("/usr/bin/containerd".into()),
        &BTreeMap::new(),
    );
    let p = r.dockerd.clone().expect("a plan");
    let c = p.containerd.as_ref().expect("containerd planned");
    assert_eq!(c.binary, Path::new("/usr/bin/containerd"));
    assert_eq!(c.args, ["--config", "/run/sysrunner/containerd.toml"]);
    assert_eq!(c.config_file, Path::new("/run/sysrunner/containerd.toml"));
    assert_eq!(
        p.daemon_json["containerd"],
        "/var/run/docker/containerd/containerd.sock"
    );
    // containerd itself parses it when the live tests start it (tests/dockerd_live.rs).
    let lines: Vec<&str> = c.config.lines().map(str::trim).collect();
    for want in [
        "version = 2".to_string(),
        format!("root = \"{data_root}/containerd/daemon\""),
        "state = \"/var/run/docker/containerd/daemon\"".into(),
        "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]".into(),
        "[grpc]".into(),
        "address = \"/var/run/docker/containerd/containerd.sock\"".into(),
    ] {
        assert!(
            lines.contains(&want.as_str()),
            "{want:?} missing:\n{}",
            c.config
        );
    }
    assert!(
        r.human()
            .contains("containerd: started by sysrunner before dockerd"),
        "{}",
        r.human()
    );

    // Without one, dockerd starts its own, as before.
    let r = assess::report(
        facts,
        None,
        &docker(Some(1400)),
        V26,
        None,
        &BTreeMap::new(),
    );
    let p = r.dockerd.clone().expect("a plan");
    assert!(p.containerd.is_none());
    assert!(p.daemon_json.get("containerd").is_none());
    assert!(r.human().contains("containerd: started by dockerd"));
}
