//! The life sandbox: each life of the container (dockerd, the runner, its job, every inner
//! container) runs in new mount, PID, IPC, UTS, cgroup and network namespaces under the
//! container's user namespace, on an overlay of the container's root whose upper layer lives on
//! the data volume and is dropped when the life ends. sysrunner stays outside, as the container's
//! PID 1, holding the credentials, the registration record and its state. (Work in progress: the
//! design, the mount plan and the life's init land with issue 13.)
//!
//! - [`dns`]: the relay that answers the life's DNS queries from the container's own resolver.
//! - [`net`]: the life's network namespace joined to the container's by a veth pair, with NAT.
//! - [`cgroup`]: the life's cgroup, its namespace root, the controllers enabled from outside.

pub mod cgroup;
pub mod dns;
pub mod env;
pub mod init;
pub mod life;
pub mod mounts;
pub mod net;
pub mod plan;
pub mod protocol;
pub mod volume;
