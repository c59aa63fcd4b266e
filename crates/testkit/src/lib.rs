//! sysrunner's test kit: what sysrunner's tests and its demo run it against, since neither GitHub
//! nor a sysbox host can be reached from a test machine. Namespace boxes that imitate a sysbox
//! container and a privileged one, a fake GitHub and a fake actions/runner, a busybox image, an
//! inner-dockerd helper, machine-wide locks, and the one gate deciding whether a test that needs
//! root can run. Owns only what it creates (and removes again); never touches the host's own
//! Docker state, its cgroups or its processes. It is never in the image.
//!
//! **It shares no code and no type with sysrunner, and cannot**: `sysrunner` is not among its
//! dependencies, so nothing here can name the product's client, settings, parser of runner output
//! or exit codes. A shared type would carry a shared mistake past every test; the contracts (the
//! shared REFERENCE.md, GitHub's OpenAPI description, README's log `phase` fields) are the only
//! common ground, and the kit speaks to sysrunner only as a program: argv, environment, its log.
//!
//! Modules:
//! - [`boxes`]: the namespace boxes (sysbox-like, privileged-like), their hidden init, and the
//!   containers made of an image that start as boxes on an overlay root, again and again.
//! - [`dns`]: Docker's embedded resolver (`127.0.0.11`), imitated inside a box's network namespace.
//! - [`fake_github`]: GitHub's runner REST API, the runner's side of it, the runner scale set API's
//!   Actions service, a control API.
//! - [`fake_runner`]: an actions/runner release whose listener speaks to the fake GitHub.
//! - [`openapi`]: the fake's answers checked against GitHub's OpenAPI description.
//! - [`registry`]: an upstream image registry and its pull-through cache, for the cache's tests.
//! - [`rig`]: a runner container's stand-in (a box, the fake runner, the fake GitHub beside it),
//!   and an image's container against the fake GitHub, reached by name.
//! - [`scale_rig`]: a rig whose box runs a real dockerd with a small runner image, for a
//!   controller that starts one runner container per job.
//! - [`soak`]: seeded lives with drawn faults, checked against README's contract.
//! - [`demo`]: one whole life of `sysrunner run` in a box, followed by its log's `phase` fields.
//! - [`image`], [`docker`], [`compose`]: a busybox image, a runner image and image trees, dockerd
//!   in a box, the compose files as Docker Compose reads them.
//! - [`gate`], [`lock`]: whether a test may run here; locks across processes.
//! - [`binaries`]: where `sysrunner-testkit`, `fake-runner-listener` and `sysrunner` are.
//! - [`cli`], [`exit`]: the `sysrunner-testkit` command line and its exit codes.
//!
//! ## Finding the binaries
//!
//! A box starts through the hidden `box-init` of the `sysrunner-testkit` binary and is entered
//! through its `box-exec`, and the fake runner's `bin/Runner.Listener` is a copy of this package's
//! `fake-runner-listener` binary. So a test of the root package, which links this library, needs
//! the binaries of this package, and cargo does not tell it where they are: `CARGO_BIN_EXE_<name>`
//! exists only for the binaries of a test's own package. Nor can a test build them: under
//! `cargo test` cargo holds the build directory's lock while the tests run.
//!
//! So [`binaries::testkit`] looks for it, in this order:
//! 1. `$SYSRUNNER_TESTKIT_BIN`, when set (another target directory, an installed copy);
//! 2. the running executable itself, when it is `sysrunner-testkit` (the demo);
//! 3. beside the running executable, and one directory up: a test runs as
//!    `target/<profile>/deps/<test>-<hash>`, and cargo puts the binaries in `target/<profile>/`.
//!
//! and [`binaries::listener`] takes the `fake-runner-listener` beside it.
//!
//! What puts it there: the workspace's `default-members` are both packages, so `cargo build` and
//! `cargo test` at the root build every binary of both, and this package's own integration tests
//! make cargo build its binaries before any test runs. A test run that builds only the root
//! package (`cargo test -p sysrunner --test lifecycle`) does not build them, and may find binaries
//! left by an earlier build of other sources. So each binary found must answer `build-id` with
//! this library's [`BUILD_ID`] (a hash of the kit's sources, made by `build.rs`); when one is
//! missing or was built from other sources the test panics, naming `cargo build -p
//! sysrunner-testkit`.
//!
//! The demo runs as `sysrunner-testkit` and needs `sysrunner`: `--sysrunner PATH`, else
//! `$SYSRUNNER_BIN`, else the `sysrunner` beside its own executable (where `cargo build` puts it).

pub mod bench;
pub mod binaries;
pub mod boxes;
pub mod cli;
pub mod compose;
pub mod demo;
pub mod dns;
pub mod docker;
pub mod exit;
pub mod fake_github;
pub mod fake_runner;
pub mod gate;
pub mod image;
pub mod lock;
pub mod openapi;
pub mod registry;
pub mod rig;
pub mod scale_rig;
pub mod soak;

pub use boxes::{BoxKind, TestBox};
pub use gate::{Need, require};

use std::time::Duration;

/// A hash of the kit's sources, the same in this library and in the binary built with it: how a
/// test tells a stale `sysrunner-testkit` from the one it was built with (see [`binaries`]).
pub const BUILD_ID: &str = env!("SYSRUNNER_TESTKIT_BUILD_ID");

/// Serialises the heavy tests (a dockerd per box) across threads and processes on this machine,
/// so that two of them never compete for a loaded 2-core machine's CPU.
pub fn serial() -> lock::Lock {
    lock::lock("serial", Duration::from_secs(30 * 60)).expect("the serial test lock")
}
