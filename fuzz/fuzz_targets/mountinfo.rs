//! `/proc/self/mountinfo` as `probe --root` reads it: any text parses without a panic, every mount
//! found has an absolute mount point, and the mount a path lives on is one of its parents.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysrunner::probe::mountinfo;

fuzz_target!(|text: &str| {
    let mounts = mountinfo::parse(text);
    for m in &mounts {
        assert!(m.mount_point.starts_with('/'), "{m:?}");
    }
    for path in [
        "/",
        "/var/lib/docker",
        "/sys/fs/cgroup/pids",
        "/var/lib/docker/overlay2/x",
    ] {
        if let Some(m) = mountinfo::mount_of(&mounts, path) {
            let mp = m.mount_point.as_str();
            assert!(mp == "/" || path == mp || path.starts_with(&format!("{mp}/")));
        }
    }
});
