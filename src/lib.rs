//! sysrunner runs one ephemeral self-hosted GitHub Actions runner per container life, with its own
//! Docker engine inside, without `--privileged` when the container runs under sysbox.
//!
//! As the container's entrypoint (`sysrunner run`) it validates its settings, probes the runtime
//! (sysbox, another user namespace, privileged, or unsupported), starts an inner `dockerd`
//! configured for that runtime, registers one ephemeral runner with GitHub, runs exactly one job as
//! an unprivileged user, deregisters, stops dockerd and exits; compose or Kubernetes starts the next.
//!
//! Modules, from the bottom up: none uses a module listed after it, and `tests/structure.rs`
//! fails on any import cycle. The facts they are
//! written from are in `docs/runtimes.md` and `docs/contracts.md`.
//! - [`secret`]: secret values that never print, and their hand-off across re-execution.
//! - [`reaper`]: the one place that waits for children, and where orphans go.
//! - [`config`]: every setting, declared once; validation before anything happens.
//! - `logging`: the log subscriber, as LOG_FORMAT and LOG_LEVEL say.
//! - [`probe`]: the facts about the runtime, read from `/proc` and `/sys` through a root path, and
//!   the verdict on them.
//! - [`registry`]: the pull-through registry cache: which mirrors the inner dockerd gets (pure),
//!   and the one `/v2/` check that decides it.
//! - [`dockerd`]: the inner dockerd's plan from the probe's facts and verdict (pure), the effects
//!   that prepare for it, and its process.
//! - [`github`]: the REST client for runner registration.
//! - [`scaleset`]: the client of GitHub's runner scale set API (sessions, the message queue, JIT
//!   configs for a scale set).
//! - [`runner`]: the actions/runner process: environment, output markers, exit codes, version.
//! - [`register`]: the ways a runner gets its identity (jit, config, pre-made), behind one trait.
//! - [`assess`]: the report `probe`, `run` and `dockerd-check` share: verdict and dockerd plan.
//! - [`error`]: every cause a command fails with.
//! - [`exit`]: the exit codes, and the one mapping from causes to them.
//! - [`lifecycle`]: one life of the container, from start to exit.
//! - [`dockerd_check`]: `sysrunner dockerd-check`, the dockerd part of `run` on its own.
//! - [`scale`]: `sysrunner scale`, a fresh runner container per job on the host's Docker Engine.
//! - [`cli`]: the command line; every command's outcome goes through [`exit`].
//!
//! The fakes, the namespace boxes and the demo the tests run sysrunner against are a crate of their
//! own, `sysrunner-testkit` (crates/testkit), which depends on nothing here.

pub mod assess;
pub mod cli;
pub mod config;
pub mod dockerd;
pub mod dockerd_check;
pub mod error;
pub mod exit;
pub mod github;
pub mod lifecycle;
mod logging;
pub mod netops;
pub mod probe;
pub mod process;
pub mod reaper;
pub mod register;
pub mod registry;
pub mod runner;
pub mod sandbox;
pub mod scale;
pub mod scaleset;
pub mod secret;
pub mod trash;
