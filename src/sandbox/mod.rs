//! The life sandbox: each life of the container (dockerd, the runner, its job, every inner
//! container) runs in new mount, PID, IPC, UTS, cgroup and network namespaces under the
//! container's user namespace, on an overlay of the container's root whose upper layer lives on
//! the data volume and is dropped when the life ends. sysrunner stays outside, as the container's
//! PID 1, holding the credentials, the registration record and its state.
//!
//! This module decides whether a life is sandboxed ([`decide`], pure) and puts one together
//! ([`start`]) and takes it apart ([`Sandbox::end`]) in order; each part is its own module's:
//!
//! - [`env`]: what the plan needs to know about the container that the probe does not read;
//! - [`plan`]: the life's mount table and files, pure; [`mounts`] carries it out in the life;
//! - [`volume`]: the data volume's layout made real before a life and cleared after;
//! - [`cgroup`]: the life's cgroup, its namespace root, the controllers enabled from outside;
//! - [`init`], [`protocol`], [`life`]: the life's init and the handle sysrunner spawns through;
//! - [`net`]: the life's network namespace joined to the container's by a veth pair, with NAT;
//! - [`dns`]: the relay that answers the life's DNS queries from the container's own resolver.
//!
//! **Order and cost.** A build runs its parts at once where nothing orders them: the init loads
//! (a fresh exec) while the volume and the cgroup are prepared and the life's rules go in; then
//! it unshares and forks; then it mounts and executes itself again while the network joins the
//! life's namespace. An end cuts the network off as soon as the life ends (nothing of the life
//! needs it once the runner has ended; removing iptables-nft rules alone takes 20–40 ms here),
//! ends the processes, removes the cgroups and renames the overlay into the volume's trash, which
//! a thread empties beside the next life. Measured over 16 lives in the sysbox-like image box on a
//! 2-core machine: build 24–66 ms (median 30), end 5–24 ms (median 12; what is left of the
//! network's end once dockerd has stopped, 0–24 ms).
//!
//! Owns the order of the steps and the life's number; never holds a credential (the life's init is
//! a fresh exec of sysrunner's binary, and nothing here passes it a secret).

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

mod start;

pub use start::{
    Ended, Network, Planned, Report, Request, Runner, START_TIMEOUT, Sandbox, StartError, VOLUME,
    build, peek_number, plan_life, plan_next, report, start,
};

use crate::config::LifeSandbox;

/// What a life does about the sandbox, from LIFE_SANDBOX and whether this container can have one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Build the life's sandbox.
    Sandbox,
    /// Run the life in the container itself, restored to pristine (`lifecycle::pristine`);
    /// `warning` says why when the operator did not ask for it.
    Reset { warning: Option<String> },
    /// LIFE_SANDBOX=required where the container cannot have it: end with this reason.
    Refuse(String),
}

/// `unavailable`: why this container cannot sandbox a life (from the plans of [`plan`] and
/// [`cgroup`]), or `None` where it can.
pub fn decide(setting: LifeSandbox, unavailable: Option<&str>) -> Decision {
    match (setting, unavailable) {
        (LifeSandbox::Off, _) => Decision::Reset { warning: None },
        (_, None) => Decision::Sandbox,
        (LifeSandbox::Auto, Some(why)) => Decision::Reset {
            warning: Some(format!(
                "no life sandbox here ({why}): each life runs in the container itself, reset to pristine; a job that is root can leave things for the next life (LIFE_SANDBOX=required refuses to run like this)"
            )),
        },
        (LifeSandbox::Required, Some(why)) => Decision::Refuse(format!(
            "LIFE_SANDBOX=required, but this container cannot sandbox a life: {why}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_never_sandboxes_and_says_nothing() {
        assert_eq!(
            decide(LifeSandbox::Off, None),
            Decision::Reset { warning: None }
        );
        assert_eq!(
            decide(LifeSandbox::Off, Some("volume on overlay")),
            Decision::Reset { warning: None }
        );
    }

    #[test]
    fn auto_and_required_sandbox_where_they_can() {
        assert_eq!(decide(LifeSandbox::Auto, None), Decision::Sandbox);
        assert_eq!(decide(LifeSandbox::Required, None), Decision::Sandbox);
    }

    #[test]
    fn auto_falls_back_with_the_reason_and_required_refuses_with_it() {
        match decide(LifeSandbox::Auto, Some("cgroupfs is read-only")) {
            Decision::Reset { warning: Some(w) } => {
                assert!(w.contains("cgroupfs is read-only"), "{w}");
                assert!(w.contains("LIFE_SANDBOX=required"), "{w}");
            }
            other => panic!("{other:?}"),
        }
        match decide(LifeSandbox::Required, Some("cgroupfs is read-only")) {
            Decision::Refuse(w) => {
                assert!(w.contains("LIFE_SANDBOX=required"), "{w}");
                assert!(w.contains("cgroupfs is read-only"), "{w}");
            }
            other => panic!("{other:?}"),
        }
    }
}
