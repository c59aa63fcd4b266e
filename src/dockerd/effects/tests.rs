//! `prepare` against a recording system: what it does for each profile, including the cgroup v2
//! nesting a cgroup v1 machine cannot run live.

use super::*;
use crate::config::DockerSettings;
use crate::dockerd::plan::{PlanInput, Version, plan};
use crate::probe::{self, Runtime};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

#[derive(Default)]
struct Recorder {
    files: RefCell<HashMap<PathBuf, String>>,
    ops: RefCell<Vec<String>>,
    processes: HashMap<i32, String>,
    /// Writes to this path fail with EBUSY this many times.
    busy: RefCell<Option<(PathBuf, u32)>>,
    securityfs_fails: bool,
}

impl Recorder {
    fn op(&self, s: String) {
        self.ops.borrow_mut().push(s);
    }
    fn ops(&self) -> Vec<String> {
        self.ops.borrow().clone()
    }
    fn file(self, p: &str, c: &str) -> Self {
        self.files.borrow_mut().insert(p.into(), c.into());
        self
    }
}

impl System for Recorder {
    fn read(&self, path: &Path) -> io::Result<String> {
        self.files
            .borrow()
            .get(path)
            .cloned()
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }
    fn write(&self, path: &Path, contents: &str) -> io::Result<()> {
        if let Some((p, n)) = self.busy.borrow_mut().as_mut()
            && p == path
            && *n > 0
        {
            *n -= 1;
            self.op(format!("write {} EBUSY", path.display()));
            return Err(io::Error::from_raw_os_error(libc_ebusy()));
        }
        self.op(format!(
            "write {} {}",
            path.display(),
            contents.lines().next().unwrap_or("")
        ));
        self.files.borrow_mut().insert(path.into(), contents.into());
        Ok(())
    }
    fn mkdir_all(&self, path: &Path) -> io::Result<()> {
        self.op(format!("mkdir {}", path.display()));
        Ok(())
    }
    fn exists(&self, path: &Path) -> bool {
        self.files.borrow().contains_key(path) || path.starts_with("/usr/sbin")
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.files.borrow_mut().remove(path);
        self.op(format!("rm {}", path.display()));
        Ok(())
    }
    fn empty_dir(&self, dir: &Path, keep: &[&str]) -> io::Result<()> {
        self.op(format!("empty {} keep {}", dir.display(), keep.join(",")));
        Ok(())
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        self.op(format!("ln {} -> {}", link.display(), target.display()));
        Ok(())
    }
    fn mount_securityfs(&self) -> io::Result<()> {
        self.op("mount securityfs".into());
        if self.securityfs_fails {
            Err(io::ErrorKind::PermissionDenied.into())
        } else {
            Ok(())
        }
    }
    fn make_rshared_root(&self) -> io::Result<()> {
        self.op("make-rshared /".into());
        Ok(())
    }
    fn process_name(&self, pid: i32) -> Option<String> {
        self.processes.get(&pid).cloned()
    }
    fn sleep(&self, d: Duration) {
        self.op(format!("sleep {}ms", d.as_millis()));
    }
}

fn libc_ebusy() -> i32 {
    nix::errno::Errno::EBUSY as i32
}

fn fixture_plan(name: &str) -> Plan {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/probe")
        .join(name);
    let facts = probe::read_facts(&root);
    let runtime = probe::decide(&facts, None).runtime;
    assert!(matches!(
        runtime,
        Runtime::Sysbox | Runtime::Privileged | Runtime::Userns
    ));
    let docker = DockerSettings {
        dockerd: crate::config::DockerdMode::On,
        image_store: crate::config::ImageStore::GraphDriver,
        registry_mirrors: vec![],
        registry_cache: None,
        registry_cache_timeout: std::time::Duration::from_secs(2),
        mtu: Some(1400),
        data: DataPolicy::Ephemeral,
        ready_timeout: Duration::from_secs(60),
    };
    plan(
        runtime,
        &facts,
        &PlanInput {
            docker: &docker,
            version: Some(Version {
                major: 26,
                minor: 1,
            }),
            detected_mtu: None,
            proxy_env: &BTreeMap::new(),
            containerd: Some("/usr/bin/containerd".into()),
        },
    )
    .unwrap()
}

#[test]
fn sysbox_profile_touches_no_kernel_state() {
    let sys = Recorder::default();
    prepare(&fixture_plan("sysbox-v2"), DataPolicy::Ephemeral, &sys).unwrap();
    let ops = sys.ops();
    assert!(
        !ops.iter()
            .any(|o| o.contains("securityfs") || o.contains("rshared") || o.contains("cgroup")),
        "{ops:#?}"
    );
    assert!(
        ops.contains(&"empty /var/lib/docker keep .sysrunner.lock,.sysrunner-trash".to_string()),
        "{ops:#?}"
    );
    assert!(
        ops.iter()
            .any(|o| o.starts_with("write /etc/docker/daemon.json")),
        "{ops:#?}"
    );
    assert!(
        ops.contains(&"ln /run/sysrunner/iptables/iptables -> /usr/sbin/iptables-nft".to_string()),
        "{ops:#?}"
    );
    assert!(
        ops.contains(
            &"ln /run/sysrunner/iptables/ip6tables-save -> /usr/sbin/ip6tables-nft-save"
                .to_string()
        ),
        "{ops:#?}"
    );
}

#[test]
fn keep_does_not_empty_the_data_root() {
    let sys = Recorder::default();
    prepare(&fixture_plan("sysbox-v2"), DataPolicy::Keep, &sys).unwrap();
    assert!(!sys.ops().iter().any(|o| o.starts_with("empty")));
}

#[test]
fn privileged_cgroup_v2_moves_every_process_then_enables_controllers() {
    let sys = Recorder::default().file("/sys/fs/cgroup/cgroup.procs", "1\n17\n23\n");
    prepare(&fixture_plan("privileged-v2"), DataPolicy::Ephemeral, &sys).unwrap();
    let ops = sys.ops();
    let expect = [
        "mount securityfs",
        "mkdir /sys/fs/cgroup/init",
        "write /sys/fs/cgroup/init/cgroup.procs 1",
        "write /sys/fs/cgroup/init/cgroup.procs 17",
        "write /sys/fs/cgroup/init/cgroup.procs 23",
        "write /sys/fs/cgroup/cgroup.subtree_control +cpuset +cpu +io +memory +hugetlb +pids +rdma +misc",
        "make-rshared /",
    ];
    let got: Vec<&str> = ops
        .iter()
        .map(String::as_str)
        .filter(|o| expect.contains(o))
        .collect();
    assert_eq!(got, expect, "{ops:#?}");
    assert!(
        ops.contains(
            &"ln /run/sysrunner/iptables/iptables -> /usr/sbin/iptables-legacy".to_string()
        )
    );
}

#[test]
fn cgroup_nesting_retries_while_processes_race_in() {
    let sys = Recorder::default().file("/sys/fs/cgroup/cgroup.procs", "1\n");
    *sys.busy.borrow_mut() = Some(("/sys/fs/cgroup/cgroup.subtree_control".into(), 3));
    prepare(&fixture_plan("privileged-v2"), DataPolicy::Ephemeral, &sys).unwrap();
    let ops = sys.ops();
    assert_eq!(ops.iter().filter(|o| o.ends_with("EBUSY")).count(), 3);
    assert_eq!(ops.iter().filter(|o| o.starts_with("sleep")).count(), 3);
    assert_eq!(
        ops.iter()
            .filter(|o| *o == "write /sys/fs/cgroup/init/cgroup.procs 1")
            .count(),
        4,
        "moved again on each attempt"
    );
}

#[test]
fn cgroup_nesting_gives_up_after_bounded_attempts() {
    let sys = Recorder::default().file("/sys/fs/cgroup/cgroup.procs", "1\n");
    *sys.busy.borrow_mut() = Some(("/sys/fs/cgroup/cgroup.subtree_control".into(), 1000));
    let err = prepare(&fixture_plan("privileged-v2"), DataPolicy::Ephemeral, &sys).unwrap_err();
    assert!(err.to_string().contains("after 20 attempts"), "{err}");
}

#[test]
fn a_failing_securityfs_mount_is_not_fatal() {
    let sys = Recorder {
        securityfs_fails: true,
        ..Default::default()
    };
    let log = prepare(&fixture_plan("privileged-v1"), DataPolicy::Ephemeral, &sys).unwrap();
    assert!(log.iter().any(|l| l.contains("securityfs not mounted")));
}

#[test]
fn stale_pid_files_and_sockets_are_removed_when_their_process_is_gone() {
    let sys = Recorder::default()
        .file(plan::PID_FILE, "4242\n")
        .file(plan::SOCKET, "")
        .file(plan::CONTAINERD_PID_FILE, "4243");
    prepare(&fixture_plan("sysbox-v2"), DataPolicy::Ephemeral, &sys).unwrap();
    let ops = sys.ops();
    for f in [plan::PID_FILE, plan::SOCKET, plan::CONTAINERD_PID_FILE] {
        assert!(ops.contains(&format!("rm {f}")), "{f}: {ops:#?}");
    }
}

#[test]
fn a_pid_reused_by_another_process_counts_as_gone() {
    let mut sys = Recorder::default().file(plan::PID_FILE, "1");
    sys.processes.insert(1, "sysrunner".into());
    prepare(&fixture_plan("sysbox-v2"), DataPolicy::Ephemeral, &sys).unwrap();
    assert!(sys.ops().contains(&format!("rm {}", plan::PID_FILE)));
}

#[test]
fn a_live_dockerd_stops_preparation_and_keeps_its_files() {
    let mut sys = Recorder::default()
        .file(plan::PID_FILE, "77")
        .file(plan::SOCKET, "");
    sys.processes.insert(77, "dockerd".into());
    let err = prepare(&fixture_plan("sysbox-v2"), DataPolicy::Ephemeral, &sys).unwrap_err();
    assert!(
        matches!(err, PrepareError::AlreadyRunning { pid: 77, .. }),
        "{err}"
    );
    assert!(
        !sys.ops()
            .iter()
            .any(|o| o.starts_with("rm") || o.starts_with("empty"))
    );
}

/// An ephemeral data root is emptied by renames: what the last life left is gone from it at once,
/// the lock file stays, and the trash empties itself off dockerd's path.
#[test]
fn the_real_data_root_is_emptied_into_a_trash_that_empties_itself() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    std::fs::create_dir_all(root.join("overlay2/abc/diff")).unwrap();
    std::fs::write(root.join("overlay2/abc/diff/big"), "layer").unwrap();
    std::fs::write(root.join(LOCK_FILE), "").unwrap();
    std::fs::write(root.join("engine-id"), "x").unwrap();
    RealSystem.empty_dir(root, &[LOCK_FILE, TRASH_DIR]).unwrap();
    let names = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(), vec![TRASH_DIR.to_string(), LOCK_FILE.to_string()]);
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(root.join(TRASH_DIR)).unwrap().count() > 0
        && std::time::Instant::now() < end
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(std::fs::read_dir(root.join(TRASH_DIR)).unwrap().count(), 0);
}

/// The cache's outcome, applied to a plan: the key is set for a mirror and gone for none, and
/// nothing else of daemon.json moves.
#[test]
fn with_mirrors_sets_or_removes_only_registry_mirrors() {
    let plan = fixture_plan("sysbox-v2");
    let with = plan.with_mirrors(&["http://cache:5000".to_string()]);
    assert_eq!(
        with.daemon_json["registry-mirrors"],
        serde_json::json!(["http://cache:5000"])
    );
    let without = with.with_mirrors(&[]);
    assert!(without.daemon_json.get("registry-mirrors").is_none());
    let mut a = with.daemon_json.clone();
    a.as_object_mut().unwrap().remove("registry-mirrors");
    assert_eq!(a, plan.daemon_json);
    assert_eq!(without.daemon_json, plan.daemon_json);
}
