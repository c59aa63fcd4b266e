//! The DNS relay where the life sandbox runs it: in the container's network namespace, whose
//! resolver is Docker's embedded DNS, queried from the life's network namespace over a veth pair.
//! The embedded DNS is imitated as dockerd makes it (moby `libnetwork/resolver_linux.go`): a
//! listener on a random port of 127.0.0.11, and `127.0.0.11:53` DNATed to it in the namespace's
//! `nat OUTPUT` chain, which only traffic generated in that namespace passes.
//!
//! Proves what the loopback tests of `sandbox::dns` cannot: the relay's upstream sockets get that
//! DNAT (the listener is not on port 53, so nothing else reaches it), the relay serves UDP and TCP
//! on the veth's address, and the life gets its answers through it while 127.0.0.11 itself is
//! nothing from the life. Needs root (network namespaces, iptables). Both namespaces are made here,
//! each by a thread of this test that `unshare`s its own network namespace; they, and the veth
//! pair between them, are gone when the threads end. No packet leaves them.

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncodable;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use sysrunner::sandbox::dns;
use sysrunner_testkit::gate::{self, Need};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// The veth pair's ends: a /30 that exists only between the two namespaces this test makes.
const CONTAINER_END: Ipv4Addr = Ipv4Addr::new(10, 253, 53, 1);
const LIFE_END: Ipv4Addr = Ipv4Addr::new(10, 253, 53, 2);
/// What the imitated embedded DNS answers for every name.
const ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// What compose writes into a container on a user-defined network.
const COMPOSE_RESOLV_CONF: &str = "nameserver 127.0.0.11\noptions ndots:0\n";
/// Bounds every wait, so that a broken setup fails instead of hanging; never a claim about speed.
const PATIENCE: Duration = Duration::from_secs(30);

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A thread in a network namespace of its own, with its loopback up. Commands it runs are in that
/// namespace too (a child starts in its parent thread's namespaces), and so are the sockets of a
/// current-thread runtime it drives.
fn in_new_netns<T: Send + 'static>(
    body: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        run(&["ip", "link", "set", "lo", "up"]);
        body()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn query(id: u16) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(
            Name::from_ascii("github.com.").unwrap(),
            RecordType::A,
        ));
    m.to_bytes().unwrap()
}

fn answer(q: &[u8]) -> Vec<u8> {
    let q = Message::from_vec(q).unwrap();
    let mut m = Message::new();
    m.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_response_code(ResponseCode::NoError)
        .set_recursion_available(true)
        .add_queries(q.queries().to_vec())
        .add_answer(Record::from_rdata(
            q.queries()[0].name().clone(),
            60,
            RData::A(A(ANSWER)),
        ));
    m.to_bytes().unwrap()
}

/// The id and the address of an answer.
fn read_answer(bytes: &[u8]) -> (u16, Option<Ipv4Addr>) {
    let m = Message::from_vec(bytes).unwrap();
    let ip = m.answers().iter().find_map(|r| match r.data() {
        RData::A(A(ip)) => Some(*ip),
        _ => None,
    });
    (m.id(), ip)
}

/// Docker's embedded DNS, imitated: UDP and TCP on one random port of 127.0.0.11, and the DNAT
/// of port 53 to it. Returns how many queries it got, when `done` fires.
async fn embedded_dns(ready: mpsc::Sender<()>, done: tokio::sync::oneshot::Receiver<()>) -> usize {
    let udp = UdpSocket::bind("127.0.0.11:0").await.unwrap();
    let port = udp.local_addr().unwrap().port();
    let tcp = TcpListener::bind(("127.0.0.11", port)).await.unwrap();
    assert_ne!(port, 53);
    for proto in ["udp", "tcp"] {
        run(&[
            "iptables",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-d",
            "127.0.0.11/32",
            "-p",
            proto,
            "--dport",
            "53",
            "-j",
            "DNAT",
            "--to-destination",
            &format!("127.0.0.11:{port}"),
        ]);
    }
    ready.send(()).unwrap();
    let mut seen = 0;
    let mut buf = vec![0u8; 65535];
    tokio::pin!(done);
    loop {
        tokio::select! {
            _ = &mut done => return seen,
            r = udp.recv_from(&mut buf) => {
                let (len, from) = r.unwrap();
                seen += 1;
                udp.send_to(&answer(&buf[..len]), from).await.unwrap();
            }
            r = tcp.accept() => {
                let (mut stream, _) = r.unwrap();
                seen += 1;
                let len = stream.read_u16().await.unwrap() as usize;
                let mut q = vec![0u8; len];
                stream.read_exact(&mut q).await.unwrap();
                let a = answer(&q);
                let mut framed = (a.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&a);
                stream.write_all(&framed).await.unwrap();
            }
        }
    }
}

/// What the life saw.
#[derive(Debug)]
struct Life {
    over_udp: (u16, Option<Ipv4Addr>),
    over_tcp: (u16, Option<Ipv4Addr>),
    /// Whether 127.0.0.11:53 answered the life directly (it must not: the relay is why it can).
    direct_answered: bool,
}

async fn life_queries(relay: SocketAddr) -> Life {
    let udp = UdpSocket::bind((LIFE_END, 0)).await.unwrap();
    udp.send_to(&query(0x1001), relay).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let len = tokio::time::timeout(PATIENCE, udp.recv(&mut buf))
        .await
        .expect("no answer over UDP")
        .unwrap();
    let over_udp = read_answer(&buf[..len]);

    let mut stream = TcpStream::connect(relay).await.unwrap();
    let q = query(0x1002);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    stream.write_all(&framed).await.unwrap();
    let over_tcp = tokio::time::timeout(PATIENCE, async {
        let len = stream.read_u16().await.unwrap() as usize;
        let mut a = vec![0u8; len];
        stream.read_exact(&mut a).await.unwrap();
        read_answer(&a)
    })
    .await
    .expect("no answer over TCP");

    // 127.0.0.11 in the life is the life's own loopback, where nothing listens: refused at once,
    // or at worst nothing within a couple of seconds.
    let direct = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    direct.connect("127.0.0.11:53").await.unwrap();
    direct.send(&query(0x1003)).await.unwrap();
    let direct_answered = matches!(
        tokio::time::timeout(Duration::from_secs(2), direct.recv(&mut buf)).await,
        Ok(Ok(_))
    );
    Life {
        over_udp,
        over_tcp,
        direct_answered,
    }
}

#[test]
fn the_life_resolves_through_the_relay_what_only_the_containers_namespace_reaches() {
    let name = "the_life_resolves_through_the_relay_what_only_the_containers_namespace_reaches";
    if !gate::require(name, &[Need::Root]) {
        return;
    }
    for tool in ["/usr/sbin/ip", "/usr/sbin/iptables"] {
        let missing = (!std::path::Path::new(tool).exists())
            .then(|| format!("needs {tool} (see .ci/install-deps)"));
        match gate::verdict(&missing.into_iter().collect::<Vec<_>>(), is_ci()) {
            gate::Verdict::Run => {}
            gate::Verdict::Skip(why) => return eprintln!("skipping {name}: {why}"),
            gate::Verdict::Fail(why) => panic!("{name} cannot run in CI: {why}"),
        }
    }

    let (tid_tx, tid_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<SocketAddr>();
    let life = in_new_netns(move || {
        tid_tx.send(nix::unistd::gettid().as_raw()).unwrap();
        let relay = go_rx.recv().expect("the container side failed");
        run(&["ip", "addr", "add", &format!("{LIFE_END}/30"), "dev", "l0"]);
        run(&["ip", "link", "set", "l0", "up"]);
        runtime().block_on(life_queries(relay))
    });
    let life_tid = tid_rx.recv().unwrap();

    let container = in_new_netns(move || {
        runtime().block_on(async move {
            let (ready_tx, ready_rx) = mpsc::channel();
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            let dns_task = tokio::spawn(embedded_dns(ready_tx, done_rx));
            // Wait for the rules without blocking the thread the listener runs on.
            while ready_rx.try_recv().is_err() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let peer = life_tid.to_string();
            run(&[
                "ip", "link", "add", "c0", "type", "veth", "peer", "name", "l0", "netns", &peer,
            ]);
            run(&[
                "ip",
                "addr",
                "add",
                &format!("{CONTAINER_END}/30"),
                "dev",
                "c0",
            ]);
            run(&["ip", "link", "set", "c0", "up"]);

            let upstreams = dns::upstreams(COMPOSE_RESOLV_CONF);
            assert!(upstreams.iter().all(|u| dns::is_loopback_resolver(u.ip())));
            let listen = SocketAddr::new(IpAddr::V4(CONTAINER_END), dns::DNS_PORT);
            let relay = dns::start(listen, upstreams, dns::Limits::default())
                .await
                .unwrap();
            go_tx.send(relay.local_addr()).unwrap();

            // Serve until the life is done with its queries.
            while !life.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let stats = relay.stats();
            relay.stop().await;
            done_tx.send(()).unwrap();
            let seen = dns_task.await.unwrap();
            (life.join().unwrap(), stats, seen)
        })
    });
    let (life, stats, seen) = container.join().unwrap();

    assert_eq!(life.over_udp, (0x1001, Some(ANSWER)), "{life:?}");
    assert_eq!(life.over_tcp, (0x1002, Some(ANSWER)), "{life:?}");
    assert!(!life.direct_answered, "127.0.0.11 answered the life itself");
    assert_eq!(
        seen, 2,
        "the embedded DNS got both queries, through the DNAT"
    );
    assert_eq!((stats.udp_queries, stats.tcp_queries), (1, 1), "{stats:?}");
}

fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}
