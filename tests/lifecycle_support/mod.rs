//! The lifecycle tests' view of the rig (`sysrunner_testkit::rig`): a runner box with the fake
//! GitHub in its own network namespace, and `sysrunner run` lives in it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::Duration;
use sysrunner_testkit::fake_github::FakeConfig;
use sysrunner_testkit::rig::Rig;
use sysrunner_testkit::{BoxKind, Need};

// Not every test file that shares this module uses every item.
#[allow(unused_imports)]
pub use sysrunner_testkit::rig::TOKEN;

pub const EXE: &str = env!("CARGO_BIN_EXE_sysrunner");
pub const NEEDS: [Need; 6] = sysrunner_testkit::gate::BOX_WITH_DOCKERD;

pub struct Runner(pub Rig);

impl std::ops::Deref for Runner {
    type Target = Rig;
    fn deref(&self) -> &Rig {
        &self.0
    }
}

impl Runner {
    pub fn start(kind: BoxKind, cfg: FakeConfig) -> Runner {
        Runner(Rig::start(kind, cfg, Path::new(EXE)).unwrap_or_else(|e| panic!("{e}")))
    }

    pub fn spawn(&self, env: &BTreeMap<String, String>, log: &Path) -> Child {
        self.0
            .spawn_in_box(&self.b.sysrunner_in_box(), &["run"], env, log)
            .unwrap()
    }

    /// One whole life: spawn, wait for the exit (bounded), return its code and log.
    pub fn life(&self, env: &BTreeMap<String, String>, limit: Duration) -> (Option<i32>, String) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = self.b.paths().state.join(format!("life-{n}.log"));
        self.0.life(&self.b.sysrunner_in_box(), env, &log, limit)
    }

    pub fn until(&self, limit: Duration, what: &str, f: impl FnMut(&Rig) -> bool) {
        assert!(
            self.0.until(limit, f),
            "timed out after {limit:?} waiting for {what}"
        );
    }
}
