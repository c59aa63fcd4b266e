//! The runtime probe: reads facts about this container through a root path and decides whether
//! it is sysbox, another user namespace, privileged, a host or unsupported. Reports facts and a
//! verdict only: what dockerd makes of them is `dockerd::plan`'s, and the report that joins the two
//! is `assess`'s. Reads only; the live checks undo what they try. Knows nothing of dockerd's plan,
//! GitHub or the runner.

mod facts;
mod live;
pub mod mountinfo;
mod verdict;

pub use facts::{
    CgroupVersion, DATA_ROOT, Facts, INITIAL_PID_NS, INITIAL_USER_NS, IdRange, capture, read_facts,
};
pub use live::{Live, RouteMtu};
pub use verdict::{REQUIRED_CAPS, Runtime, Verdict, decide, missing_caps, remedy};

use std::path::{Path, PathBuf};

/// What the probe saw below one root.
#[derive(Debug, Clone)]
pub struct Observed {
    pub facts: Facts,
    /// The live checks' results; `None` when the facts came from a captured tree (`--root`), or
    /// on a host, where the verdict is already certain and nothing is tried.
    pub live: Option<Live>,
}

impl Observed {
    pub fn verdict(&self) -> Verdict {
        decide(&self.facts, self.live.as_ref())
    }
}

/// Where the live cgroup test makes its directory: inside our own cgroup.
fn own_cgroup_dir(facts: &Facts) -> Option<PathBuf> {
    let path = facts.cgroup.path.as_deref()?.trim_start_matches('/');
    match facts.cgroup.version? {
        CgroupVersion::V2 => Some(Path::new("/sys/fs/cgroup").join(path)),
        CgroupVersion::V1 => Some(Path::new("/sys/fs/cgroup/pids").join(path)),
    }
}

/// Reads the facts below `root`. With `root == "/"` the live checks run too (MTU, mount, cgroup),
/// except on a host: there the verdict is already certain and nothing is tried.
pub async fn observe(root: &Path) -> Observed {
    let facts = read_facts(root);
    let live = if root == Path::new("/") && facts.pid_namespace.initial != Some(true) {
        let dir = (facts.euid == Some(0))
            .then(|| own_cgroup_dir(&facts))
            .flatten();
        Some(live::check(dir).await)
    } else {
        None
    };
    Observed { facts, live }
}
