//! `sandbox::net` live, with each iptables backend, in network namespaces of its own: a
//! "container" namespace linked to an "outer" one (its LAN, 172.18.0.0/24 as a compose network
//! would be, and a TEST-NET-3 address behind it for the default route), and "lives" that are
//! child processes with their own network namespace. Nothing touches the machine's own network
//! namespace; nothing leaves these. Needs root (namespaces, links, iptables) and `ip`, `nsenter`
//! and the iptables backend; skips (or fails in CI) through the test kit's gate.

use std::fs::File;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use sysrunner::dockerd::Iptables;
use sysrunner::reaper::ExitStatus;
use sysrunner::sandbox::net::{self, Commands, Guard, Output, Plan};
use sysrunner_testkit::gate::{self, Need, Verdict};

/// The container's link MTU in these tests: not 1500, so that a default cannot pass for it.
const MTU: u32 = 1400;
const CONTAINER_LAN: &str = "172.18.0.0/24";
const CONTAINER_ADDR: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
const OUTER_ADDR: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 1);
/// Beyond the container's LAN: reached through its default route.
const FAR_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const OUTER_PORT: u16 = 7000;
const CONTAINER_PORT: u16 = 7001;
const LIFE_PORT: u16 = 7003;
/// How long a probe that must fail waits. Bounds the wait only: nothing asserts on time, and a
/// connection that is merely slow cannot make a blocked probe pass.
const BLOCKED_WAIT: Duration = Duration::from_secs(3);

/// The test's commands, waited for directly: no reaper in a test process.
#[derive(Clone)]
struct Direct;

impl Commands for Direct {
    async fn output(&self, mut cmd: Command, input: Vec<u8>) -> io::Result<Output> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        // iptables-restore's input is a few lines: it fits the pipe before the child reads.
        child.stdin.take().expect("piped").write_all(&input)?;
        let out = child.wait_with_output()?;
        Ok(Output {
            status: match (out.status.code(), out.status.signal()) {
                (Some(c), _) => ExitStatus::Code(c),
                (None, s) => ExitStatus::Signal(s.unwrap_or(0)),
            },
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

/// Root, and the programs the test runs; skips outside CI, fails in it.
fn may_run(test: &str, backend: Iptables) -> bool {
    if !gate::require(test, &[Need::Root]) {
        return false;
    }
    let b = backend.as_str();
    let tools = [
        "ip".to_owned(),
        "nsenter".to_owned(),
        "sleep".to_owned(),
        format!("iptables-{b}"),
        format!("iptables-{b}-save"),
        format!("iptables-{b}-restore"),
    ];
    let missing: Vec<String> = tools
        .iter()
        .filter(|p| which::which(p).is_err())
        .map(|p| format!("needs {p} on PATH"))
        .collect();
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    match gate::verdict(&missing, ci) {
        Verdict::Run => true,
        Verdict::Skip(why) => {
            let _ = writeln!(
                io::stderr(),
                "skipping {test}: {why} (CI=true would fail instead)"
            );
            false
        }
        Verdict::Fail(why) => panic!("{test} cannot run in CI: {why}"),
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) -> String {
    run(Command::new("ip").args(args))
}

/// Runs `f` on a thread of its own inside the network namespace at `path`: every socket `f`
/// makes lives there.
fn in_netns<T: Send + 'static>(path: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    std::thread::spawn(move || {
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Runs the future `f` makes on a multi-threaded tokio runtime inside the namespace at `path`,
/// as sysrunner runs in the container's: its threads start from the one in the namespace, and
/// are in it too.
fn block_on_in<T, F>(path: &str, f: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    in_netns(path, move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
}

/// The container's and the outer network namespaces, named after this process and the test;
/// deleted on drop, which destroys their links.
struct World {
    container: String,
    outer: String,
    backend: Iptables,
}

impl World {
    /// `test` keeps the namespaces of tests running at once apart.
    fn create(test: &str, backend: Iptables) -> World {
        let base = format!("srnet-{}-{test}", std::process::id());
        let w = World {
            container: format!("{base}-c"),
            outer: format!("{base}-o"),
            backend,
        };
        for n in [&w.container, &w.outer] {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
            ip(&["netns", "add", n]);
        }
        let (c, o) = (w.container.as_str(), w.outer.as_str());
        let mtu = MTU.to_string();
        // Made inside the container's namespace, its peer straight in the outer one.
        ip(&[
            "-n", c, "link", "add", "lan", "mtu", &mtu, "type", "veth", "peer", "name", "up0",
            "mtu", &mtu, "netns", o,
        ]);
        ip(&[
            "-n",
            c,
            "addr",
            "add",
            &format!("{CONTAINER_ADDR}/24"),
            "dev",
            "lan",
        ]);
        ip(&[
            "-n",
            o,
            "addr",
            "add",
            &format!("{OUTER_ADDR}/24"),
            "dev",
            "up0",
        ]);
        ip(&[
            "-n",
            o,
            "addr",
            "add",
            &format!("{FAR_ADDR}/32"),
            "dev",
            "lo",
        ]);
        for (n, dev) in [(c, "lan"), (c, "lo"), (o, "up0"), (o, "lo")] {
            ip(&["-n", n, "link", "set", dev, "up"]);
        }
        ip(&[
            "-n",
            c,
            "route",
            "add",
            "default",
            "via",
            &OUTER_ADDR.to_string(),
        ]);
        w
    }

    fn c(&self) -> String {
        format!("/run/netns/{}", self.container)
    }

    fn o(&self) -> String {
        format!("/run/netns/{}", self.outer)
    }

    /// Every rule in the container's namespace tagged by any life, as `iptables -S` prints it.
    fn tagged_rules(&self) -> Vec<String> {
        let bin = format!("iptables-{}", self.backend.as_str());
        ["filter", "nat"]
            .iter()
            .flat_map(|t| {
                run(Command::new("ip").args([
                    "netns",
                    "exec",
                    &self.container,
                    &bin,
                    "-t",
                    t,
                    "-S",
                ]))
                .lines()
                .filter(|l| l.contains("--comment sysrunner-life-"))
                .map(String::from)
                .collect::<Vec<_>>()
            })
            .collect()
    }

    fn rules_of(&self, plan: &Plan) -> Vec<String> {
        let tag = format!("--comment {} ", plan.tag);
        self.tagged_rules()
            .into_iter()
            .filter(|l| l.contains(&tag))
            .collect()
    }

    fn link_exists(&self, name: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.container, "link", "show", name])
            .output()
            .unwrap()
            .status
            .success()
    }

    fn mtu(&self, name: &str) -> u32 {
        mtu_in(&ip(&["-n", &self.container, "-o", "link", "show", name]))
    }

    fn networks(&self) -> Vec<ipnet::Ipv4Net> {
        block_on_in(&self.c(), || async {
            net::container_networks().await.unwrap()
        })
    }

    fn setup(&self, plan: &Plan, life: &Life) -> Guard<Direct> {
        let (plan, pid, backend) = (plan.clone(), life.pid(), self.backend);
        let t = std::time::Instant::now();
        let g = block_on_in(&self.c(), move || async move {
            net::setup(&plan, pid, backend, &Direct).await
        })
        .unwrap_or_else(|e| panic!("setup: {e}"));
        eprintln!("setup ({:?}) took {:?}", self.backend, t.elapsed());
        g
    }

    fn teardown(&self, guard: Guard<Direct>) {
        let t = std::time::Instant::now();
        block_on_in(&self.c(), move || guard.teardown())
            .unwrap_or_else(|e| panic!("teardown: {e}"));
        eprintln!("teardown ({:?}) took {:?}", self.backend, t.elapsed());
    }

    fn release(&self, guard: Guard<Direct>) {
        let t = std::time::Instant::now();
        block_on_in(&self.c(), move || guard.release()).unwrap_or_else(|e| panic!("release: {e}"));
        eprintln!("release ({:?}) took {:?}", self.backend, t.elapsed());
    }

    /// True when the link `name` is gone within `limit` (the kernel frees a namespace, and the
    /// veth pairs with an end in it, in a work queue of its own).
    fn link_goes(&self, name: &str, limit: Duration) -> bool {
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            if !self.link_exists(name) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn sweep(&self) -> usize {
        let backend = self.backend;
        block_on_in(&self.c(), move || async move {
            net::sweep(backend, &Direct).await
        })
        .unwrap_or_else(|e| panic!("sweep: {e}"))
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for n in [&self.container, &self.outer] {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

fn mtu_in(ip_link_line: &str) -> u32 {
    let words: Vec<&str> = ip_link_line.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "mtu").expect("an mtu");
    words[i + 1].parse().unwrap()
}

/// A life's stand-in: `sleep` in a network namespace of its own, unshared before it runs.
struct Life(Child);

impl Life {
    fn start() -> Life {
        let mut cmd = Command::new("sleep");
        cmd.arg("infinity");
        // SAFETY: unshare is a plain system call, safe between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
            });
        }
        let life = Life(cmd.spawn().unwrap());
        // spawn returns after exec, so the unshare has happened; still, never touch our own.
        let ns = |p: String| std::fs::read_link(p).unwrap();
        assert_ne!(
            ns(format!("/proc/{}/ns/net", life.pid())),
            ns("/proc/self/ns/net".into()),
            "the life must not be in the test's network namespace"
        );
        life
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    fn ns(&self) -> String {
        format!("/proc/{}/ns/net", self.pid())
    }

    fn ip(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.ns()))
            .arg("ip")
            .args(args)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn connect(&self, to: SocketAddr, wait: Duration) -> io::Result<TcpStream> {
        in_netns(&self.ns(), move || TcpStream::connect_timeout(&to, wait))
    }

    fn send_udp(&self, to: SocketAddr, what: &'static [u8]) {
        in_netns(&self.ns(), move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.send_to(what, to).unwrap();
        });
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Life {
    fn drop(&mut self) {
        self.kill();
    }
}

fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// The life reaches the outer network, on the container's LAN and beyond its default route, and
/// arrives there with the container's address.
fn reaches_outside_through_nat(life: &Life, outer: &TcpListener) {
    for to in [OUTER_ADDR, FAR_ADDR] {
        let stream = life
            .connect(addr(to, OUTER_PORT), Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("the life cannot reach {to}: {e}"));
        let (_conn, peer) = outer.accept().unwrap();
        assert_eq!(peer.ip(), CONTAINER_ADDR, "traffic to {to} not masqueraded");
        drop(stream);
    }
}

/// Each probe must fail; they run at once, each bounded by [`BLOCKED_WAIT`].
fn all_blocked(life: &Life, targets: &[SocketAddr]) {
    let ns = life.ns();
    let probes: Vec<_> = targets
        .iter()
        .map(|&to| {
            let ns = ns.clone();
            std::thread::spawn(move || {
                (
                    to,
                    in_netns(&ns, move || TcpStream::connect_timeout(&to, BLOCKED_WAIT)),
                )
            })
        })
        .collect();
    for p in probes {
        let (to, r) = p.join().unwrap();
        assert!(r.is_err(), "the life reached {to}");
    }
}

fn life_and_its_network(backend: Iptables) {
    let w = World::create(backend.as_str(), backend);
    let outer = in_netns(&w.o(), || {
        TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], OUTER_PORT))).unwrap()
    });
    // A listener of the container's namespace that no life may reach (as sysrunner's health
    // endpoint, or a pod's sidecar, would be), on every address.
    let private = in_netns(&w.c(), || {
        let l = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], CONTAINER_PORT))).unwrap();
        l.set_nonblocking(true).unwrap();
        l
    });
    let private_udp = in_netns(&w.c(), || {
        let s = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], CONTAINER_PORT))).unwrap();
        s.set_read_timeout(Some(BLOCKED_WAIT)).unwrap();
        s
    });

    // --- The first life.
    let life_a = Life::start();
    let taken = w.networks();
    let lan: ipnet::Ipv4Net = CONTAINER_LAN.parse().unwrap();
    assert!(taken.contains(&lan), "{taken:?}");
    let a = net::plan(1, MTU, &taken).unwrap();
    assert_eq!(a.extra_routes, [lan]);
    let guard_a = w.setup(&a, &life_a);

    assert_eq!(w.mtu(&a.host_if), MTU, "the container end's MTU");
    assert_eq!(
        mtu_in(&life_a.ip(&["-o", "link", "show", &a.life_if]).unwrap()),
        MTU,
        "the life end's MTU"
    );
    let routes = life_a.ip(&["-4", "route", "show"]).unwrap();
    let route = |to: &str| {
        routes
            .lines()
            .find(|l| l.starts_with(&format!("{to} ")))
            .unwrap_or_else(|| panic!("no route to {to}: {routes}"))
    };
    assert!(
        route("default").starts_with(&format!("default via {} dev eth0", a.host_addr)),
        "{routes}"
    );
    let to_lan = route(CONTAINER_LAN);
    assert!(
        to_lan.contains("dev eth0") && to_lan.contains("scope link") && !to_lan.contains("via"),
        "the container's LAN must be on-link in the life, for dockerd to avoid it: {routes}"
    );
    assert!(
        life_a
            .ip(&["-o", "link", "show", "lo"])
            .unwrap()
            .contains("UP"),
        "lo is up in the life"
    );
    assert_eq!(
        ip(&["-n", &w.container, "-6", "addr", "show", "dev", &a.host_if]).trim(),
        "",
        "the container end has no IPv6 address the life could reach past the IPv4 rules"
    );
    assert_eq!(
        w.rules_of(&a).len(),
        a.rules().len(),
        "{:?}",
        w.tagged_rules()
    );

    reaches_outside_through_nat(&life_a, &outer);

    // The relay's address and port, UDP and TCP: open.
    let (relay_tcp, relay_udp) = {
        let dns = a.dns;
        in_netns(&w.c(), move || {
            let u = UdpSocket::bind(dns).unwrap();
            u.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            (TcpListener::bind(dns).unwrap(), u)
        })
    };
    life_a
        .connect(a.dns, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("the life cannot reach the relay over TCP: {e}"));
    let (_conn, peer) = relay_tcp.accept().unwrap();
    assert_eq!(peer.ip(), a.life_addr);
    life_a.send_udp(a.dns, b"query");
    let mut buf = [0u8; 16];
    let (n, from) = relay_udp
        .recv_from(&mut buf)
        .expect("the relay got the life's UDP query");
    assert_eq!(
        (&buf[..n], from.ip()),
        (&b"query"[..], std::net::IpAddr::V4(a.life_addr))
    );

    // Everything else of the container's namespace: closed, on every address it has.
    all_blocked(
        &life_a,
        &[
            addr(a.host_addr, CONTAINER_PORT),
            addr(CONTAINER_ADDR, CONTAINER_PORT),
        ],
    );
    life_a.send_udp(addr(a.host_addr, CONTAINER_PORT), b"leak");
    assert!(
        private_udp.recv_from(&mut buf).is_err(),
        "a UDP datagram from the life reached a socket of the container's namespace"
    );
    assert!(
        private.accept().is_err(),
        "the private listener accepted a connection from the life"
    );

    // --- A second life while the first still runs: planned from what the container's
    // namespace holds now, 16384 lives on (the same slot), so its /30 must move aside.
    let life_b = Life::start();
    let taken = w.networks();
    assert!(taken.contains(&a.net), "{taken:?}");
    let b = net::plan(1 + 16384, MTU, &taken).unwrap();
    assert!(
        !a.net.contains(&b.net.network()) && !b.net.contains(&a.net.network()),
        "{} and {} collide",
        a.net,
        b.net
    );
    assert_eq!(b.extra_routes, [lan], "other lives' links are not routed");
    let guard_b = w.setup(&b, &life_b);
    assert_eq!(w.rules_of(&b).len(), b.rules().len());
    assert_eq!(w.rules_of(&a).len(), a.rules().len());
    reaches_outside_through_nat(&life_b, &outer);

    // A setup of the first life's number again (a lead's bug, or a sysrunner before this one
    // that left its link): refused before it adds anything, and its failure does not undo the
    // first life's network.
    let again = {
        let (a, pid, backend) = (a.clone(), life_b.pid(), backend);
        block_on_in(&w.c(), move || async move {
            net::setup(&a, pid, backend, &Direct).await
        })
    };
    match again {
        Err(net::NetError::LinkExists { name }) => assert_eq!(name, a.host_if),
        Err(e) => panic!("expected LinkExists, got {e}"),
        Ok(g) => {
            std::mem::forget(g);
            panic!("a second setup of life {} went through", a.life)
        }
    }
    assert!(w.link_exists(&a.host_if));
    assert_eq!(w.rules_of(&a).len(), a.rules().len());
    reaches_outside_through_nat(&life_a, &outer);

    // Neither life reaches the other.
    let in_b = in_netns(&life_b.ns(), || {
        TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], LIFE_PORT))).unwrap()
    });
    all_blocked(&life_a, &[addr(b.life_addr, LIFE_PORT)]);
    drop(in_b);

    // --- The first life's teardown, its process still running: its link and rules go, the
    // second's stay and still work.
    w.teardown(guard_a);
    assert!(!w.link_exists(&a.host_if), "{} is left", a.host_if);
    assert!(
        life_a.ip(&["link", "show", &a.life_if]).is_err(),
        "the life end went with the pair"
    );
    assert_eq!(w.rules_of(&a), Vec::<String>::new());
    assert_eq!(
        w.rules_of(&b).len(),
        b.rules().len(),
        "{:?}",
        w.tagged_rules()
    );
    reaches_outside_through_nat(&life_b, &outer);

    // --- The second life's end, as a sandbox ends one: its network released while its process
    // is still being killed. The link is cut off before the rules go (the life reaches nothing
    // from then on), and the pair goes with the life's namespace, not by a delete.
    let mut life_b = life_b;
    w.release(guard_b);
    assert_eq!(w.tagged_rules(), Vec::<String>::new());
    assert!(
        ip(&["-n", &w.container, "-o", "link", "show", &b.host_if]).contains("state DOWN"),
        "{} is still up after the release",
        b.host_if
    );
    all_blocked(
        &life_b,
        &[addr(OUTER_ADDR, OUTER_PORT), addr(FAR_ADDR, OUTER_PORT)],
    );
    assert!(
        w.link_exists(&b.host_if),
        "released, not deleted, while the life runs"
    );
    life_b.kill();
    assert!(
        w.link_goes(&b.host_if, Duration::from_secs(30)),
        "{} outlived the life's namespace",
        b.host_if
    );
    assert_eq!(w.sweep(), 0, "the life's end left something to sweep");

    // --- A life that ended before its teardown: what the life's end took already is no error.
    let mut life_d = Life::start();
    let d = net::plan(3, MTU, &w.networks()).unwrap();
    let guard_d = w.setup(&d, &life_d);
    life_d.kill();
    w.teardown(guard_d);
    assert!(!w.link_exists(&d.host_if), "{} is left", d.host_if);
    assert_eq!(w.tagged_rules(), Vec::<String>::new());
    assert_eq!(w.sweep(), 0, "teardown left something to sweep");

    // --- A sysrunner that dies without teardown: the next start's sweep removes it all.
    let life_c = Life::start();
    let c = net::plan(2, MTU, &w.networks()).unwrap();
    let guard_c = w.setup(&c, &life_c);
    drop(guard_c);
    assert_eq!(w.rules_of(&c).len(), c.rules().len());
    assert_eq!(w.sweep(), c.rules().len() + 1, "every rule and the link");
    assert!(!w.link_exists(&c.host_if));
    assert_eq!(w.tagged_rules(), Vec::<String>::new());
    assert_eq!(w.sweep(), 0);
}

#[test]
fn a_life_behind_iptables_legacy() {
    if may_run("a_life_behind_iptables_legacy", Iptables::Legacy) {
        life_and_its_network(Iptables::Legacy);
    }
}

#[test]
fn a_life_behind_iptables_nft() {
    if may_run("a_life_behind_iptables_nft", Iptables::Nft) {
        life_and_its_network(Iptables::Nft);
    }
}

/// A process that shares the caller's network namespace is not a life: setup refuses it rather
/// than configure the container's own namespace as if it were the life's.
#[test]
fn a_process_without_its_own_network_namespace_is_refused() {
    if !may_run(
        "a_process_without_its_own_network_namespace_is_refused",
        Iptables::Nft,
    ) {
        return;
    }
    let w = World::create("shared", Iptables::Nft);
    // A process inside the container's namespace, without a namespace of its own; it enters
    // the namespace before it runs, so spawn returns with it there.
    let container_ns = File::open(w.c()).unwrap();
    let mut cmd = Command::new("sleep");
    cmd.arg("infinity");
    // SAFETY: setns is a plain system call, safe between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(&container_ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)
        });
    }
    let mut same = cmd.spawn().unwrap();
    let pid = same.id() as i32;
    let plan = net::plan(3, MTU, &[]).unwrap();
    let r = block_on_in(&w.c(), move || async move {
        net::setup(&plan, pid, Iptables::Nft, &Direct).await
    });
    let _ = same.kill();
    let _ = same.wait();
    match r {
        Err(e @ net::NetError::SharedNamespace { .. }) => assert!(e.permanent()),
        Err(e) => panic!("expected SharedNamespace, got {e}"),
        Ok(g) => {
            std::mem::forget(g);
            panic!("setup accepted a process in the container's own namespace")
        }
    }
    assert_eq!(w.tagged_rules(), Vec::<String>::new(), "nothing was added");
}

/// The reaper waits for every child of its process, so its test runs in a process of its own:
/// this test binary again, running only [`reaper_in_a_process_of_its_own`].
#[test]
fn the_reaper_feeds_a_commands_input_and_reads_its_output() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "reaper_in_a_process_of_its_own",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(REAPER_CHILD, "1")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("1 passed"),
        "the inner test did not run: {said}"
    );
}

const REAPER_CHILD: &str = "SANDBOX_NET_REAPER_CHILD";

/// What sysrunner runs iptables-save and iptables-restore through: the input reaches the child
/// while its output is read (an input larger than a pipe holds would otherwise deadlock), and a
/// child that exits without reading its input reports its own status, not a broken pipe.
#[test]
#[ignore = "run by the_reaper_feeds_a_commands_input_and_reads_its_output, in a process of its own"]
fn reaper_in_a_process_of_its_own() {
    // Run by hand (`--include-ignored`) among the other tests, the reaper would reap their
    // children: the outer test runs it.
    if std::env::var(REAPER_CHILD).as_deref() != Ok("1") {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let reaper = sysrunner::reaper::Reaper::start().unwrap();
            let input: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
            let out = reaper
                .output(Command::new("cat"), input.clone())
                .await
                .unwrap();
            assert_eq!(out.status, ExitStatus::Code(0));
            assert!(out.stdout == input, "cat gave back other bytes");

            let mut cmd = Command::new("sh");
            cmd.args(["-c", "echo refused >&2; exit 3"]);
            let out = reaper.output(cmd, input).await.unwrap();
            assert_eq!(out.status, ExitStatus::Code(3));
            assert_eq!(String::from_utf8_lossy(&out.stderr), "refused\n");
        });
}
