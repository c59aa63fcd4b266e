//! Putting one life's sandbox together, in order, and taking it apart in the reverse order. Every
//! reading and every plan comes first, so that a container that cannot have a sandbox is known
//! before anything is made ([`StartError::Unavailable`]); a failure after that undoes what was
//! made. The parts' mechanics are their modules'.

use super::plan::{self, Kind, Layout, Step};
use super::{cgroup, dns, env, life::Life, net, protocol::Setup, volume};
use crate::config::DataPolicy;
use crate::dockerd::Iptables;
use crate::probe::Facts;
use crate::process::Spawner;
use crate::reaper::Reaper;
use ipnet::Ipv4Net;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the lifecycle knows that a life's sandbox is made from.
#[derive(Debug, Clone)]
pub struct Request {
    pub kind: Kind,
    /// The container's `/var/lib/docker` (a volume).
    pub volume: PathBuf,
    pub volume_fstype: Option<String>,
    pub facts: Facts,
    /// LIFE_BINDS.
    pub binds: Vec<PathBuf>,
    /// DOCKER_DATA.
    pub data: DataPolicy,
    /// The runner user's sudoers rule (RUNNER_SUDO), or none.
    pub sudoers: Option<String>,
    pub runner_dir: PathBuf,
    pub runner_uid: u32,
    pub runner_gid: u32,
    /// The container's link MTU.
    pub mtu: u32,
    pub iptables: Iptables,
    /// How long the life's init may take to build the life.
    pub timeout: Duration,
}

/// The runner user and release, as a life's plan needs them.
#[derive(Debug, Clone)]
pub struct Runner {
    pub dir: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// The sudoers rule RUNNER_SUDO asks for, or none.
    pub sudoers: Option<String>,
}

/// The container's `/var/lib/docker`: the volume a sandboxed life lives on.
pub const VOLUME: &str = "/var/lib/docker";

/// How long the life's init may take to build a life (mounts, a pivot, one exec).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

impl Request {
    /// The request for this container, from its runtime, the probe's facts and dockerd's plan:
    /// `run` and `probe` make it the same way.
    pub fn for_container(
        runtime: crate::probe::Runtime,
        facts: &Facts,
        dockerd: &crate::dockerd::Plan,
        runner: Runner,
        binds: Vec<PathBuf>,
        data: DataPolicy,
    ) -> Request {
        Request {
            kind: if runtime == crate::probe::Runtime::Privileged {
                Kind::Privileged
            } else {
                Kind::Namespaced
            },
            volume: PathBuf::from(VOLUME),
            volume_fstype: facts.data_root.fstype.clone(),
            facts: facts.clone(),
            binds,
            data,
            sudoers: runner.sudoers,
            runner_dir: runner.dir,
            runner_uid: runner.uid,
            runner_gid: runner.gid,
            mtu: dockerd.mtu.unwrap_or(1500),
            iptables: dockerd.iptables,
            timeout: START_TIMEOUT,
        }
    }
}

/// What `sysrunner probe` says of the sandbox: whether the next life gets one, and its plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Planned>,
}

/// Plans the next life without making anything.
pub async fn report(req: &Request) -> Report {
    match plan_life(req, peek_number(&req.volume)).await {
        Ok(p) => Report {
            available: true,
            unavailable: None,
            plan: Some(p),
        },
        Err(e) => Report {
            available: false,
            unavailable: Some(e.to_string()),
            plan: None,
        },
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Known before anything was made: this container cannot sandbox a life.
    #[error("{0}")]
    Unavailable(String),
    /// A step failed; what it had made is undone.
    #[error("cannot build the life's sandbox: {0}")]
    Failed(String),
}

/// A life's sandbox, built: its processes start through [`Sandbox::spawner`].
pub struct Sandbox {
    life: Life,
    network: Network,
    cgroup: cgroup::Plan,
    layout: Layout,
    /// The life's number (its cgroup `life-<n>`, its link `vlife<n>`).
    pub number: u32,
    /// How long building it took, and each stage of it: plan; prepare (the volume, the cgroup
    /// and the rules, while the init loads); namespaces (the init unshares and forks); build
    /// (the init's mounts and exec, while the network joins); relay.
    pub took: Duration,
    pub steps: Vec<(&'static str, Duration)>,
    /// The life's address on its link.
    pub address: std::net::Ipv4Addr,
}

/// The file on the volume that counts the container's lives.
const COUNTER: &str = "lives";

/// The file on the volume that says a life's network was set up and not yet taken apart.
const NETWORK_MARK: &str = "network";

/// The next life's number: one more than the last one this volume saw.
fn next_number(layout: &Layout) -> u32 {
    let path = layout.state.join(COUNTER);
    let last: u32 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let n = last.wrapping_add(1);
    let _ =
        std::fs::create_dir_all(&layout.state).and_then(|()| std::fs::write(&path, n.to_string()));
    n
}

/// The cgroup's mounts in the life, as steps of the life's mount plan.
fn cgroup_steps(inner: &[cgroup::InnerStep]) -> Result<Vec<Step>, String> {
    use nix::mount::MsFlags;
    let mut steps = Vec::new();
    for s in inner {
        steps.push(match s {
            cgroup::InnerStep::Mkdir(p) => Step::Mkdir { path: p.clone() },
            cgroup::InnerStep::Symlink { target, link } => Step::Symlink {
                to: PathBuf::from(target),
                link: link.clone(),
            },
            cgroup::InnerStep::Mount(m) if m.flags.contains(MsFlags::MS_REMOUNT) => {
                Step::RemountReadOnly {
                    target: m.target.clone(),
                }
            }
            cgroup::InnerStep::Mount(m) => match m.fstype.as_deref() {
                Some("cgroup2") => Step::Cgroup2 {
                    target: m.target.clone(),
                },
                Some("cgroup") => Step::CgroupV1 {
                    target: m.target.clone(),
                    options: m.data.clone().unwrap_or_default(),
                },
                Some("tmpfs") => Step::Tmpfs {
                    target: m.target.clone(),
                    data: m.data.clone().unwrap_or_default(),
                    nosuid: m.flags.contains(MsFlags::MS_NOSUID),
                    nodev: m.flags.contains(MsFlags::MS_NODEV),
                    noexec: m.flags.contains(MsFlags::MS_NOEXEC),
                },
                other => return Err(format!("unexpected cgroup mount {other:?}")),
            },
        });
    }
    Ok(steps)
}

/// Everything a life is made of, decided before anything is made. `sysrunner probe` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Planned {
    pub number: u32,
    pub mounts: plan::Plan,
    pub cgroup: cgroup::Plan,
    pub net: net::Plan,
    #[serde(skip)]
    layout: Layout,
    #[serde(skip)]
    upstreams: Vec<std::net::SocketAddr>,
    #[serde(skip)]
    exe: PathBuf,
    /// How long planning took.
    #[serde(skip)]
    took: Duration,
}

impl Planned {
    /// sysrunner's own state directory on the volume, outside what the life gets.
    pub fn state_dir(&self) -> &Path {
        &self.layout.state
    }
}

/// Reads what the container is and plans life `number` in it. Changes nothing.
pub async fn plan_life(req: &Request, number: u32) -> Result<Planned, StartError> {
    let unavailable = |e: &dyn std::fmt::Display| StartError::Unavailable(e.to_string());
    let env = env::read(Path::new("/"));
    let layout = Layout::new(&req.volume);
    let cg_layout = cgroup::read_layout(Path::new("/"));
    let cg_plan = cgroup::plan(&req.facts, &cg_layout, number).map_err(|e| unavailable(&e))?;
    let cgroup_mounts =
        cgroup_steps(&cgroup::inner_mounts(&cg_plan)).map_err(|e| unavailable(&e))?;
    let upstreams = dns::upstreams(&env.resolv_conf);
    if upstreams.is_empty() {
        return Err(StartError::Unavailable(
            "the container's /etc/resolv.conf names no nameserver for the life's DNS relay".into(),
        ));
    }
    let mut taken = net::container_networks()
        .await
        .map_err(|e| unavailable(&e))?;
    taken.extend(upstreams.iter().filter_map(|u| match u.ip() {
        IpAddr::V4(a) => Ipv4Net::new(a, 32).ok(),
        IpAddr::V6(_) => None,
    }));
    let net_plan = net::plan(number, req.mtu, &taken).map_err(|e| unavailable(&e))?;
    let resolv_conf = dns::life_resolv_conf(&env.resolv_conf, net_plan.host_addr.into());
    let mounts = plan::plan(&plan::Input {
        kind: req.kind,
        layout: &layout,
        volume_fstype: req.volume_fstype.as_deref(),
        root_fstype: env.root_fstype.as_deref(),
        tmp: env.tmp.clone(),
        devices: &env.devices,
        binds: &req.binds,
        hostname: plan::HOSTNAME,
        address: net_plan.life_addr,
        resolv_conf: &resolv_conf,
        sudoers: req.sudoers.as_deref(),
        cgroup_mounts,
        runner_dir: &req.runner_dir,
        runner_uid: req.runner_uid,
        runner_gid: req.runner_gid,
    })
    .map_err(|e| unavailable(&e))?;
    Ok(Planned {
        number,
        mounts,
        cgroup: cg_plan,
        net: net_plan,
        layout,
        upstreams,
        exe: env.exe,
        took: Duration::ZERO,
    })
}

/// The number the next life of this volume gets, without counting it.
pub fn peek_number(volume: &Path) -> u32 {
    let path = Layout::new(volume).state.join(COUNTER);
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0)
        .wrapping_add(1)
}

/// Builds a life's sandbox. Reads and plans everything first: [`StartError::Unavailable`] means
/// nothing was made.
pub async fn start(req: &Request, reaper: &Reaper) -> Result<Sandbox, StartError> {
    let planned = plan_next(req).await?;
    build(req, planned, reaper).await
}

/// Plans the next life, counting it: [`StartError::Unavailable`] means this container cannot
/// sandbox a life. Changes nothing but the counter.
pub async fn plan_next(req: &Request) -> Result<Planned, StartError> {
    let t = Instant::now();
    let mut planned = plan_life(req, next_number(&Layout::new(&req.volume))).await?;
    planned.took = t.elapsed();
    Ok(planned)
}

/// Builds the life `planned` describes; what it made is undone when it fails.
pub async fn build(
    req: &Request,
    planned: Planned,
    reaper: &Reaper,
) -> Result<Sandbox, StartError> {
    let begun = Instant::now() - planned.took;
    let Planned {
        number,
        mounts: mount_plan,
        cgroup: cg_plan,
        net: net_plan,
        layout,
        upstreams,
        exe,
        took: plan_took,
    } = planned;
    let mut steps = vec![("plan", plan_took)];
    let mut lap = Instant::now();
    let mut mark = |name: &'static str, steps: &mut Vec<(&'static str, Duration)>| {
        steps.push((name, lap.elapsed()));
        lap = Instant::now();
    };

    // Effects; each failure undoes what came before it. Three stages, each running its parts at
    // once: (1) the init loads (a fresh exec of sysrunner) while the volume and the cgroup are
    // prepared and the life's rules go in; (2) the init takes its setup and unshares; (3) it
    // builds the mount table and executes itself again while the network joins its namespace.
    let failed = |what: &str, e: &dyn std::fmt::Display| StartError::Failed(format!("{what}: {e}"));
    let mut starting =
        Life::spawn(&exe, reaper, req.timeout).map_err(|e| failed("start the life", &e))?;
    let cg_fs = cgroup::HostFs::new("/");
    let marker = layout.state.join(NETWORK_MARK);
    let rules = async {
        // A life whose network was not taken apart (sysrunner was killed) may have left rules
        // in a network namespace that outlives the container start (a pod's). Sweeping costs
        // an iptables-save per backend, so only where the last life left its mark.
        if marker.exists() {
            match net::sweep(req.iptables, reaper).await {
                Ok(n) if n > 0 => tracing::info!("removed {n} network leftovers of earlier lives"),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("cannot sweep the network leftovers of earlier lives: {e}")
                }
            }
        }
        if let Err(e) = std::fs::create_dir_all(&layout.state)
            .and_then(|()| std::fs::write(&marker, number.to_string()))
        {
            tracing::warn!(
                "cannot record the life's network in {}: {e}",
                marker.display()
            );
        }
        net::prepare(&net_plan, req.iptables, reaper)
            .await
            .map_err(|e| failed("make the life's network", &e))
    };
    let files = async {
        let (layout, mount_plan, data) = (layout.clone(), mount_plan.clone(), req.data);
        tokio::task::spawn_blocking(move || {
            let prepared = volume::prepare(&layout, &mount_plan, data);
            volume::empty_trash(&layout);
            prepared
        })
        .await
        .map_err(|e| failed("prepare the volume", &e))?
        .map_err(|e| failed("prepare the volume", &e))?;
        cgroup::prepare(&cg_plan, &cg_fs)
            .map(|_| ())
            .map_err(|e| failed("prepare the life's cgroup", &e))
    };
    let (rules, files) = tokio::join!(rules, files);
    let undo_rules = |rules: Option<net::Rules>| async move {
        if let Some(r) = rules {
            if let Err(e) = r.undo().await {
                tracing::warn!("cannot remove the rules of a life that was not built: {e}");
            }
        }
    };
    let rules = match (rules, files) {
        (Ok(r), Ok(())) => r,
        (rules, files) => {
            let _ = cgroup::remove(&cg_plan, &cg_fs);
            let err = files.err();
            let rules = match rules {
                Ok(r) => Some(r),
                Err(e) => return Err(e),
            };
            undo_rules(rules).await;
            return Err(err.expect("one of the two failed"));
        }
    };
    mark("prepare", &mut steps);

    let (join, leaf) = cgroup_paths(&cg_plan);
    let setup = Setup {
        steps: mount_plan.steps.clone(),
        hostname: mount_plan.hostname.clone(),
        cgroup_join: join,
        cgroup_leaf: leaf,
        exe: exe.clone(),
    };
    let pid = match async {
        starting.setup(&setup)?;
        starting.forked().await
    }
    .await
    {
        Ok(pid) => pid,
        Err(e) => {
            drop(starting);
            let _ = cgroup::remove(&cg_plan, &cg_fs);
            undo_rules(Some(rules)).await;
            return Err(failed("start the life", &e));
        }
    };
    mark("namespaces", &mut steps);

    // The setup process is in the life's leaf cgroup now: the controllers can be enabled.
    let network = async {
        cgroup::enable(&cg_plan, &cg_fs)
            .map_err(|e| failed("enable the life's cgroup controllers", &e))?;
        Ok(rules.connect(&net_plan, pid).await)
    };
    let (network, life) = tokio::join!(network, starting.ready());
    let (life, guard) = match (life, network) {
        (Ok(life), Ok(Ok(guard))) => (life, guard),
        (life, network) => {
            let (guard, err) = match network {
                Ok(Ok(g)) => (Some(g), None),
                Ok(Err(e)) => (None, Some(failed("make the life's network", &e))),
                Err(e) => (None, Some(e)),
            };
            let err = match (err, &life) {
                (Some(e), _) => e,
                (None, Err(e)) => failed("start the life", e),
                (None, Ok(_)) => unreachable!("both succeeded"),
            };
            if let Ok(life) = life {
                life.end(Duration::from_secs(5)).await;
            }
            if let Some(g) = guard {
                let _ = g.teardown().await;
            }
            let _ = cgroup::remove(&cg_plan, &cg_fs);
            return Err(err);
        }
    };
    mark("build", &mut steps);
    let relay = match dns::start(net_plan.dns, upstreams, dns::Limits::default()).await {
        Ok(r) => Some(r),
        Err(e) => {
            let e = failed("start the life's DNS relay", &e);
            life.end(Duration::from_secs(5)).await;
            let _ = guard.teardown().await;
            let _ = cgroup::remove(&cg_plan, &cg_fs);
            return Err(e);
        }
    };
    mark("relay", &mut steps);
    let network = Network::new(guard, relay, layout.state.join(NETWORK_MARK));
    let mut sandbox = Sandbox {
        life,
        network,
        cgroup: cg_plan,
        layout,
        number,
        took: Duration::ZERO,
        steps: Vec::new(),
        address: net_plan.life_addr,
    };
    sandbox.took = begun.elapsed();
    sandbox.steps = steps;
    Ok(sandbox)
}

/// The `cgroup.procs` files the life's setup process writes itself into before and after it
/// unshares its cgroup namespace.
fn cgroup_paths(p: &cgroup::Plan) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let join = p
        .life_dirs()
        .into_iter()
        .map(|d| d.join("cgroup.procs"))
        .collect();
    let leaf = match &p.tree {
        cgroup::Tree::V2(t) => vec![t.leaf.join("cgroup.procs")],
        cgroup::Tree::V1(_) => Vec::new(),
    };
    (join, leaf)
}

/// The life's network (its relay, link and rules), ended once: when the life no longer needs it
/// (the lifecycle ends it as the life ends, after the runner's end), or by [`Sandbox::end`].
/// Ending it removes the rules, which takes an iptables-restore (20 to 40 ms with iptables-nft
/// on this machine): begun while sysrunner deregisters and dockerd stops, it is off the life's
/// path as long as those take as long.
#[derive(Clone)]
pub struct Network(Arc<std::sync::Mutex<NetworkState>>);

enum NetworkState {
    Up {
        guard: net::Guard,
        relay: Option<dns::Relay>,
        mark: PathBuf,
    },
    Ending(tokio::sync::watch::Receiver<Option<Result<(), String>>>),
}

impl Network {
    fn new(guard: net::Guard, relay: Option<dns::Relay>, mark: PathBuf) -> Network {
        Network(Arc::new(std::sync::Mutex::new(NetworkState::Up {
            guard,
            relay,
            mark,
        })))
    }

    /// Begins ending the network, in a task of its own: the relay stops, the link is cut off,
    /// the rules go, and the mark that would have the next start sweep them is removed. Does
    /// nothing the second time.
    pub fn end(&self) {
        let mut state = self.0.lock().expect("network state");
        if matches!(*state, NetworkState::Ending(_)) {
            return;
        }
        let (tx, rx) = tokio::sync::watch::channel(None);
        let NetworkState::Up { guard, relay, mark } =
            std::mem::replace(&mut *state, NetworkState::Ending(rx))
        else {
            unreachable!("checked above");
        };
        let life = guard.life();
        tokio::spawn(async move {
            let t = Instant::now();
            if let Some(r) = relay {
                r.stop().await;
            }
            let done = guard
                .release()
                .await
                .map_err(|e| format!("the life's network: {e}"));
            if done.is_ok() {
                let _ = std::fs::remove_file(&mark);
            }
            tracing::debug!(
                life,
                "ended the life's network in {:.3}s",
                t.elapsed().as_secs_f64()
            );
            let _ = tx.send(Some(done));
        });
    }

    /// Waits until [`Network::end`]'s work is done, and says how it went.
    async fn ended(&self) -> Result<(), String> {
        let mut rx = match &*self.0.lock().expect("network state") {
            NetworkState::Ending(rx) => rx.clone(),
            NetworkState::Up { .. } => return Err("the life's network was never ended".into()),
        };
        match rx.wait_for(Option::is_some).await {
            Ok(done) => done.clone().expect("waited for Some"),
            Err(_) => Err("the task that ended the life's network vanished".into()),
        }
    }
}

/// What ending a life took.
#[derive(Debug, Clone)]
pub struct Ended {
    pub took: Duration,
    /// Ending the life's processes (the init kills what is left, the PID namespace goes).
    pub life: Duration,
    /// Waiting for the relay to stop, the link to be cut off and the life's rules to be removed
    /// (beside the processes' end; what [`Network::end`] did before the end was called does not
    /// count).
    pub network: Duration,
    /// The cgroups removed and the overlay's directories moved to the trash (after the
    /// processes' end).
    pub files: Duration,
    /// What could not be undone (it is retried at the next life's start).
    pub problems: Vec<String>,
}

impl Sandbox {
    /// Where the life's processes start.
    pub fn spawner(&self) -> Arc<dyn Spawner> {
        self.life.spawner()
    }

    /// The life's PID 1, in the container's PID namespace.
    pub fn pid(&self) -> i32 {
        self.life.pid()
    }

    /// sysrunner's own child that holds the life: ended by [`Sandbox::end`], never by a blanket
    /// kill of sysrunner's children.
    pub fn setup_pid(&self) -> i32 {
        self.life.setup_pid()
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The life's network, to end it before the life ends (see [`Network::end`]).
    pub fn network(&self) -> Network {
        self.network.clone()
    }

    /// Ends the life (every process of it, within `grace`) and, beside that, its relay and its
    /// network (unless [`Network::end`] began that earlier): the link is cut off first, then the
    /// rules go, and the pair goes with the life's namespace. Once the processes are gone, its
    /// cgroups and overlay.
    pub async fn end(self, grace: Duration) -> Ended {
        let begun = Instant::now();
        let Sandbox {
            life,
            network,
            cgroup,
            layout,
            ..
        } = self;
        network.end();
        let network = async move {
            let t = Instant::now();
            let done = network.ended().await;
            (done, t.elapsed())
        };
        let rest = async move {
            life.end(grace).await;
            let life_took = begun.elapsed();
            // Every process of the life is gone: its cgroups and its overlay can go.
            let files = tokio::task::spawn_blocking(move || {
                let t = Instant::now();
                let mut problems = Vec::new();
                if let Err(e) = cgroup::remove(&cgroup, &cgroup::HostFs::new("/")) {
                    problems.push(format!("the life's cgroups: {e}"));
                }
                if let Err(e) = volume::clear(&layout) {
                    problems.push(format!("the life's overlay: {e}"));
                }
                (problems, t.elapsed())
            })
            .await;
            (life_took, files)
        };
        let ((net_done, net_took), (life_took, files)) = tokio::join!(network, rest);
        let mut problems: Vec<String> = net_done.err().into_iter().collect();
        let files_took = match files {
            Ok((p, took)) => {
                problems.extend(p);
                took
            }
            Err(e) => {
                problems.push(format!("the life's cgroups and overlay: {e}"));
                Duration::ZERO
            }
        };
        for p in &problems {
            tracing::warn!("ending the life's sandbox: {p}");
        }
        Ended {
            took: begun.elapsed(),
            life: life_took,
            network: net_took,
            files: files_took,
            problems,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn life_numbers_count_up_on_the_volume() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        assert_eq!(next_number(&layout), 1);
        assert_eq!(next_number(&layout), 2);
        std::fs::write(layout.state.join(COUNTER), "41\n").unwrap();
        assert_eq!(next_number(&layout), 42);
        std::fs::write(layout.state.join(COUNTER), "garbage").unwrap();
        assert_eq!(next_number(&layout), 1);
    }
}
