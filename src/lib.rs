//! sysrunner runs one ephemeral self-hosted GitHub Actions runner per container life, with its own
//! Docker engine inside, without `--privileged` when the container runs under sysbox.
//!
//! As the container's entrypoint (`sysrunner run`) it validates its settings, probes the runtime
//! (sysbox, another user namespace, privileged, or unsupported), starts an inner `dockerd`
//! configured for that runtime, registers one ephemeral runner with GitHub, runs exactly one job as
//! an unprivileged user, deregisters, stops dockerd and exits; compose or Kubernetes starts the next.
//!
//! Modules:
//! - [`config`]: every setting, declared once; validation before anything happens.
//! - [`probe`]: what the runtime is, read from `/proc` and `/sys` through a root path.
//! - [`dockerd`]: the inner dockerd's plan (pure) and the effects that carry it out.
//! - [`github`]: the REST client for runner registration.
//! - [`reaper`]: the one place that waits for children, and where orphans go.
//! - [`runner`]: the actions/runner process.
//! - [`lifecycle`]: one life of the container, from start to exit.
//! - [`cli`]: the command line, and the mapping of outcomes to [`exit::Exit`] codes.
//!
//! The fakes, the namespace boxes and the demo the tests run sysrunner against are a crate of their
//! own, `sysrunner-testkit` (crates/testkit), which depends on nothing here.

pub mod cli;
pub mod config;
pub mod dockerd;
pub mod exit;
pub mod github;
pub mod lifecycle;
mod logging;
pub mod probe;
pub mod reaper;
pub mod runner;
pub mod secret;
