//! What sysrunner and the life's init say to each other, over a datagram socket pair: one JSON
//! message per datagram, file descriptors only from sysrunner to the life (the output pipes of a
//! process to spawn), never the other way. A job is root in the life and can forge anything the
//! init says: nothing it says can reach further than its own life (sysrunner treats it as the
//! life's word, never as a command), and it can never hand sysrunner a descriptor.

use crate::process::Spec;
use crate::reaper::ExitStatus;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The largest message either side sends: a spawn with its environment.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// The file descriptor the control socket has in the life's init process.
pub const CONTROL_FD: i32 = 3;

/// What the life's init needs to build the life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setup {
    /// The mount steps, in order (`super::plan::Step`).
    pub steps: Vec<super::plan::Step>,
    pub hostname: String,
    /// Writes its pid into these `cgroup.procs` files before it unshares its cgroup namespace
    /// (the life's cgroup, in every hierarchy)…
    pub cgroup_join: Vec<PathBuf>,
    /// …and into these after (the leaf the life's processes live in; empty on cgroup v1).
    pub cgroup_leaf: Vec<PathBuf>,
    /// The binary the init executes as the life's PID 1, from the life's own root.
    pub exe: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "kebab-case")]
pub enum ToLife {
    /// The first message: build the life.
    Setup(Setup),
    /// Run a process; two descriptors come with it: its stdout and stderr.
    Spawn {
        id: u64,
        spec: Spec,
    },
    Signal {
        id: u64,
        signal: i32,
        group: bool,
    },
    /// Kill every process of the life but those spawned and still running.
    KillOrphans,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "kebab-case")]
pub enum FromLife {
    /// From the setup process: the life's init, by its pid in the container's pid namespace.
    Forked {
        pid: i32,
    },
    /// The life is built; its init runs from the life's root.
    Ready,
    /// Building the life failed at this step.
    Failed {
        step: String,
        error: String,
    },
    Spawned {
        id: u64,
    },
    SpawnFailed {
        id: u64,
        error: String,
    },
    Exited {
        id: u64,
        status: Status,
    },
    OrphansKilled {
        count: usize,
    },
}

/// A process's end, as it crosses the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Code(i32),
    Signal(i32),
}

impl From<Status> for ExitStatus {
    fn from(s: Status) -> ExitStatus {
        match s {
            Status::Code(c) => ExitStatus::Code(c),
            Status::Signal(s) => ExitStatus::Signal(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_json() {
        let mut spec = Spec::new("/usr/bin/dockerd");
        spec.args = vec!["--config-file".into(), "/etc/docker/daemon.json".into()];
        spec.env.insert("PATH".into(), "/usr/bin".into());
        for m in [
            ToLife::Spawn { id: 3, spec },
            ToLife::Signal {
                id: 3,
                signal: 15,
                group: true,
            },
            ToLife::KillOrphans,
        ] {
            let text = serde_json::to_vec(&m).unwrap();
            assert_eq!(serde_json::from_slice::<ToLife>(&text).unwrap(), m);
        }
        let m = FromLife::Exited {
            id: 3,
            status: Status::Signal(9),
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(text, r#"{"msg":"exited","id":3,"status":{"signal":9}}"#);
        assert_eq!(serde_json::from_str::<FromLife>(&text).unwrap(), m);
    }
}
