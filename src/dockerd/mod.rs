//! The inner dockerd: a pure plan from the probe's verdict ([`plan`]), and the effects that carry
//! it out. Owns dockerd's files (daemon.json, pid files, socket, data root lock) and process; knows
//! nothing of GitHub or the runner.

pub mod plan;

pub use plan::{Iptables, Plan, PreStep, Profile, Version};
pub mod effects;
pub mod process;

pub use process::{Dockerd, StartError, StopReport, ping};
pub mod check;
