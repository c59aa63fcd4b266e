//! Test support that is also a product (the demo reuses it): namespace boxes that imitate sysbox and
//! privileged containers, the fake GitHub and the fake actions/runner, a busybox image, an inner-dockerd helper,
//! machine-wide locks, and the one gate deciding whether a test that needs root can run. Owns only
//! what it creates (and removes again); never touches the host's own Docker state, its cgroups or
//! its processes. Behind the `testkit` feature (on by default, off in the image).

pub mod boxes;
pub mod compose;
pub mod demo;
pub mod docker;
pub mod fake_github;
pub mod fake_runner;
pub mod gate;
pub mod image;
pub mod lock;
pub mod rig;

pub use boxes::{BoxKind, TestBox};
pub use gate::{Need, require};

use std::time::Duration;

/// Serialises the heavy tests (a dockerd per box) across threads and processes on this machine,
/// so that two of them never compete for a loaded 2-core machine's CPU.
pub fn serial() -> lock::Lock {
    lock::lock("serial", Duration::from_secs(30 * 60)).expect("the serial test lock")
}
