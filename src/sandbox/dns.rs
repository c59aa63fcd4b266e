//! The life's DNS: the relay sysrunner serves, from the container's network namespace, on the
//! veth's container-side address, and the resolv.conf that names it in the life. Owns reading the
//! container's resolv.conf (pure), the life's copy of it (pure), and the relay's sockets and tasks.
//! Leaves to others: choosing the address and making it exist (`sandbox::net`), the firewall that
//! keeps the life off every other port of the container (`sandbox::net`), writing the life's file
//! and binding it into the life (the sandbox's mount plan), and when the relay starts and stops
//! (the lifecycle).
//!
//! ## Why a relay
//!
//! The container's resolver is often Docker's embedded DNS at `127.0.0.11` (compose's user-defined
//! networks): dockerd listens on a random port of `127.0.0.11` inside the container's network
//! namespace and DNATs `:53` to it in that namespace's `nat OUTPUT` chain, which only sees traffic
//! generated there (moby `libnetwork/resolver_linux.go`); a packet from the life's namespace to
//! 127/8 is a martian. systemd-resolved's `127.0.0.53` and a local dnsmasq answer only on the
//! container's loopback too ([`is_loopback_resolver`]). The relay's upstream sockets are opened in
//! the container's namespace, so Docker's DNAT applies to them as it does to any process there.
//!
//! ## What the relay does
//!
//! - UDP and TCP on one address. Each message must be a DNS query (QR=0, opcode QUERY, exactly one
//!   question, parsed whole by `hickory-proto`); anything else is dropped and counted, so a job
//!   cannot use the relay to send arbitrary bytes to the container's resolver.
//! - Each query goes to the upstreams in the order of resolv.conf: the next on a timeout, an error
//!   (a refused port), or a SERVFAIL/NOTIMP/REFUSED answer, as glibc's `res_send` does with the
//!   nameservers it is given (`resolv/res_send.c`, `send_dg`) and Docker's embedded resolver does
//!   with its own (moby `libnetwork/resolver.go`, `ServeDNS`). The life's libc sees one nameserver,
//!   the relay, so the failover it would have done among the container's ones happens here. When
//!   every upstream failed and one of them answered SERVFAIL/NOTIMP/REFUSED, the last such answer
//!   is relayed: the querier learns of the failure now instead of after its own timeout.
//! - The answer goes back byte for byte: the relay never rewrites, caches or synthesises one. A
//!   truncated (TC) UDP answer therefore reaches the querier as it is, which retries over TCP.
//! - Bounded: at most [`Limits::in_flight`] UDP queries are being forwarded at once (each holds a
//!   64 KiB receive buffer and one socket; the rest are dropped and counted, and the querier's libc
//!   retries), at most [`Limits::connections`] TCP connections are open (more are closed at once),
//!   and a TCP connection that sends nothing for [`Limits::idle`] is closed.
//! - Logs at debug at most per query; never at info per query, which a job could flood the log with.

use hickory_proto::op::{Header, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

#[cfg(test)]
mod tests;

/// Docker's embedded DNS server, as its containers on user-defined networks see it.
pub const DOCKER_EMBEDDED_DNS: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11));

/// The DNS port, for the relay and for every nameserver resolv.conf names (it has no port syntax).
pub const DNS_PORT: u16 = 53;

/// glibc's `MAXNS`: a resolver uses the first three nameservers and no more (resolv.conf(5)); the
/// container's own processes never query a fourth, so neither does the relay.
const MAXNS: usize = 3;

/// The largest DNS message: UDP's payload limit, and TCP's 2-byte length prefix.
const MAX_MESSAGE: usize = u16::MAX as usize;

// ---------------------------------------------------------------------------------------------
// resolv.conf, both ways (pure)

/// The rest of a resolv.conf line when it is a `keyword` line the way glibc matches one (`MATCH`
/// in `resolv/res_init.c`): the keyword at the start of the line, then a space or a tab. Anything
/// else (leading blanks, `#` and `;` comments, unknown keywords) is no such line.
fn keyword_line<'a>(line: &'a str, keyword: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(keyword)?;
    rest.starts_with([' ', '\t']).then_some(rest)
}

/// The nameservers a process in the container queries, in order, each on port 53.
///
/// Parsed as glibc does (`res_vinit_1` in `resolv/res_init.c`): the address is the first token
/// after `nameserver` (trailing text ignored), IPv4 or IPv6 with an optional `%scope`; a line whose
/// address does not parse is skipped; only the first three count (`MAXNS`); and a file with none
/// means the loopback resolver `127.0.0.1`, as a missing or empty resolv.conf does for glibc and
/// musl. A `%scope` that is an interface name cannot be resolved without the system; it gets scope
/// 0, as glibc gives it when the name does not resolve.
pub fn upstreams(resolv_conf: &str) -> Vec<SocketAddr> {
    let mut found: Vec<SocketAddr> = resolv_conf
        .lines()
        .filter_map(|line| {
            let rest = keyword_line(line, "nameserver")?;
            let token = rest.split([' ', '\t']).find(|t| !t.is_empty())?;
            nameserver(token)
        })
        .take(MAXNS)
        .collect();
    if found.is_empty() {
        found.push(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), DNS_PORT));
    }
    found
}

/// One nameserver token: an IPv4 address, or an IPv6 address with an optional `%scope`.
fn nameserver(token: &str) -> Option<SocketAddr> {
    if let Ok(v4) = token.parse::<Ipv4Addr>() {
        return Some(SocketAddr::new(v4.into(), DNS_PORT));
    }
    let (addr, scope) = match token.split_once('%') {
        Some((addr, scope)) => (addr, scope.parse::<u32>().unwrap_or(0)),
        None => (token, 0),
    };
    let v6 = addr.parse::<Ipv6Addr>().ok()?;
    Some(SocketAddrV6::new(v6, DNS_PORT, 0, scope).into())
}

/// The life's resolv.conf: the relay as its only nameserver, and the container's `search`,
/// `domain` and `options` lines as they are, in their order (the last of `search` and `domain`
/// wins in glibc, so the order is kept). `options ndots:0` from compose and Kubernetes'
/// `options ndots:5` with its search domains thus resolve in the life as in the container.
/// Left out: the container's nameservers (the life may reach none of them), `sortlist` (which
/// orders answers by the container's networks, not the life's) and comments.
pub fn life_resolv_conf(container_resolv_conf: &str, relay: IpAddr) -> String {
    let mut out = format!(
        "# The life's resolver: sysrunner relays to the container's nameservers.\nnameserver {relay}\n"
    );
    for line in container_resolv_conf.lines() {
        let kept = ["search", "domain", "options"];
        if kept.iter().any(|k| keyword_line(line, k).is_some()) {
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
}

/// Whether a nameserver answers only inside the container's own network namespace, so that the
/// life cannot reach it and needs the relay: a loopback address, such as Docker's embedded DNS
/// ([`DOCKER_EMBEDDED_DNS`]), systemd-resolved's `127.0.0.53` or a local dnsmasq's `127.0.0.1`
/// (IPv4-mapped IPv6 included).
pub fn is_loopback_resolver(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

// ---------------------------------------------------------------------------------------------
// Messages (pure)

/// Why a message from the life is not relayed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NotAQuery {
    /// Not a DNS message at all.
    Unparsable(String),
    /// A response (QR=1).
    Response,
    /// Opcode other than QUERY (NOTIFY, UPDATE, IQUERY, …).
    Opcode(OpCode),
    /// A question count other than one, which no resolver sends (RFC 9619).
    Questions(usize),
}

impl fmt::Display for NotAQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotAQuery::Unparsable(e) => write!(f, "not a DNS message ({e})"),
            NotAQuery::Response => f.write_str("a response, not a query"),
            NotAQuery::Opcode(op) => write!(f, "opcode {op}, not QUERY"),
            NotAQuery::Questions(n) => write!(f, "{n} questions, not one"),
        }
    }
}

/// What a valid query asks, for the debug log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Query {
    pub id: u16,
    /// `name type`, e.g. `github.com. A`.
    pub question: String,
}

/// The relay's gate: the message must parse whole as a DNS query with one question.
fn check_query(bytes: &[u8]) -> Result<Query, NotAQuery> {
    let message = Message::from_vec(bytes).map_err(|e| NotAQuery::Unparsable(e.to_string()))?;
    if message.message_type() != MessageType::Query {
        return Err(NotAQuery::Response);
    }
    if message.op_code() != OpCode::Query {
        return Err(NotAQuery::Opcode(message.op_code()));
    }
    match message.queries() {
        [q] => Ok(Query {
            id: message.id(),
            question: format!("{} {}", q.name(), q.query_type()),
        }),
        qs => Err(NotAQuery::Questions(qs.len())),
    }
}

/// What an upstream's response to a query is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// The answer: relay it.
    Answer,
    /// SERVFAIL, NOTIMP or REFUSED: ask the next upstream, and relay this one if none does better.
    TryNext(ResponseCode),
}

/// Judges an upstream's reply from its header alone; its body goes back unread and unchanged.
/// `None`: not a response to this query (another id, not a response, not DNS), to be ignored.
fn judge_reply(query_id: u16, bytes: &[u8]) -> Option<Reply> {
    let header = Header::read(&mut BinDecoder::new(bytes)).ok()?;
    if header.message_type() != MessageType::Response || header.id() != query_id {
        return None;
    }
    Some(match header.response_code() {
        rc @ (ResponseCode::ServFail | ResponseCode::NotImp | ResponseCode::Refused) => {
            Reply::TryNext(rc)
        }
        _ => Reply::Answer,
    })
}

// ---------------------------------------------------------------------------------------------
// The relay (effects)

/// The relay's bounds. Every field is at least 1 in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// UDP queries being forwarded at once; more are dropped (and counted) until one finishes.
    pub in_flight: usize,
    /// TCP connections open at once; more are closed as soon as they are accepted.
    pub connections: usize,
    /// How long one upstream has to answer one query (UDP or TCP, connecting included) before the
    /// next is asked.
    pub upstream_timeout: Duration,
    /// How long a TCP connection may stay silent (or take to send one message, or to take its
    /// answer) before it is closed.
    pub idle: Duration,
}

impl Default for Limits {
    /// `upstream_timeout` is glibc's own per-nameserver default (`RES_TIMEOUT`, 5 s), longer
    /// than Docker's embedded resolver gives each of its upstreams (`extIOTimeout`, 4 s) so that
    /// its own failover can finish; `idle` is an idle period "on the order of seconds", as RFC
    /// 7766 §6.2.3 recommends, with room for a slow job. `in_flight` bounds the relay's UDP
    /// receive buffers to 16 MiB (64 KiB each).
    fn default() -> Limits {
        Limits {
            in_flight: 256,
            connections: 64,
            upstream_timeout: Duration::from_secs(5),
            idle: Duration::from_secs(10),
        }
    }
}

/// Which socket of the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        })
    }
}

/// Why the relay did not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// No nameserver to forward to ([`upstreams`] never returns none; a caller's own list can).
    #[error("the DNS relay has no upstream nameserver")]
    NoUpstreams,
    /// An upstream is the relay's own address: every query would come back to it.
    #[error("the DNS relay's upstream {0} is its own address")]
    Loop(SocketAddr),
    /// The address cannot be listened on.
    #[error(
        "cannot listen for DNS on {transport} {addr}: {source}{}",
        bind_hint(source)
    )]
    Bind {
        transport: Transport,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

impl RelayError {
    /// Whether starting again later may succeed: the address may be in use by a relay that is
    /// still stopping, or not yet assigned to its interface. The others need a different call.
    pub fn retry_may_help(&self) -> bool {
        match self {
            RelayError::Bind { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable
            ),
            RelayError::NoUpstreams | RelayError::Loop(_) => false,
        }
    }
}

fn bind_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::AddrNotAvailable => {
            " (the address is on no interface of this network namespace: assign it first)"
        }
        io::ErrorKind::PermissionDenied => {
            " (port 53 needs CAP_NET_BIND_SERVICE in the network namespace's user namespace)"
        }
        _ => "",
    }
}

/// What the relay has done so far; a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Valid queries received over UDP (including those then dropped as `busy`).
    pub udp_queries: u64,
    /// Valid queries received over TCP.
    pub tcp_queries: u64,
    /// Answers relayed back to the life.
    pub answered: u64,
    /// Queries no upstream answered in time (the querier got nothing; a TCP one was closed).
    pub unanswered: u64,
    /// Messages dropped for not being DNS queries (a TCP one also closes its connection).
    pub malformed: u64,
    /// UDP queries dropped because [`Limits::in_flight`] were already being forwarded.
    pub busy: u64,
    /// TCP connections closed on arrival because [`Limits::connections`] were open.
    pub refused_connections: u64,
    /// UDP queries being forwarded now.
    pub in_flight: usize,
    /// The most UDP queries ever forwarded at once: never above [`Limits::in_flight`].
    pub peak_in_flight: usize,
    /// TCP connections open now.
    pub open_connections: usize,
}

#[derive(Default)]
struct Counters {
    udp_queries: AtomicU64,
    tcp_queries: AtomicU64,
    answered: AtomicU64,
    unanswered: AtomicU64,
    malformed: AtomicU64,
    busy: AtomicU64,
    refused_connections: AtomicU64,
    peak_in_flight: AtomicUsize,
}

fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What the relay's tasks share.
struct Shared {
    upstreams: Vec<SocketAddr>,
    limits: Limits,
    counters: Counters,
    // One permit per UDP query being forwarded, one per open TCP connection. A permit lives in
    // the task it was given to, so the count is right however the task ends (answered, timed
    // out, abandoned by `stop`), and the gauges in `Stats` are read off them.
    in_flight: Arc<Semaphore>,
    connections: Arc<Semaphore>,
}

impl Shared {
    fn stats(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let c = &self.counters;
        Stats {
            udp_queries: get(&c.udp_queries),
            tcp_queries: get(&c.tcp_queries),
            answered: get(&c.answered),
            unanswered: get(&c.unanswered),
            malformed: get(&c.malformed),
            busy: get(&c.busy),
            refused_connections: get(&c.refused_connections),
            in_flight: self.limits.in_flight - self.in_flight.available_permits(),
            peak_in_flight: c.peak_in_flight.load(Ordering::Relaxed),
            open_connections: self.limits.connections - self.connections.available_permits(),
        }
    }
}

/// A running relay. Stop it with [`Relay::stop`], which returns once its sockets are closed;
/// dropping it stops it too, without waiting.
pub struct Relay {
    local: SocketAddr,
    shared: Arc<Shared>,
    // Dropping the sender is the stop signal: both loops watch for it, so a dropped Relay stops
    // them just as `stop` does.
    stop: watch::Sender<()>,
    udp: JoinHandle<()>,
    tcp: JoinHandle<()>,
}

impl Relay {
    /// The address the relay listens on, UDP and TCP (with the port chosen when `listen` had 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Stops the relay: every query and connection in progress is abandoned, and both listening
    /// sockets are closed when this returns (the address can be bound again).
    pub async fn stop(self) {
        let Relay {
            local,
            shared,
            stop,
            udp,
            tcp,
        } = self;
        drop(stop);
        for task in [udp, tcp] {
            if let Err(e) = task.await {
                if e.is_panic() {
                    tracing::error!("the DNS relay on {local} panicked: {e}");
                }
            }
        }
        tracing::debug!(%local, stats = ?shared.stats(), "DNS relay stopped");
    }
}

/// Starts the relay on `listen` (UDP and TCP; port 0 picks one free for both) on the current tokio
/// runtime, forwarding to `upstreams` in their order. Panics outside a tokio runtime.
///
/// `listen` should be the veth's container-side address, never an unspecified one: the relay's UDP
/// answers leave from the address they were sent to only when it is bound to it, and an address
/// the life can reach is one the whole container network can reach.
pub async fn start(
    listen: SocketAddr,
    upstreams: Vec<SocketAddr>,
    limits: Limits,
) -> Result<Relay, RelayError> {
    if upstreams.is_empty() {
        return Err(RelayError::NoUpstreams);
    }
    if listen.port() != 0 {
        if let Some(own) = upstreams.iter().find(|u| **u == listen) {
            return Err(RelayError::Loop(*own));
        }
    }
    let limits = Limits {
        in_flight: limits.in_flight.max(1),
        connections: limits.connections.max(1),
        ..limits
    };
    let (udp_socket, tcp_listener) = bind(listen).await?;
    let local = udp_socket.local_addr().map_err(|source| RelayError::Bind {
        transport: Transport::Udp,
        addr: listen,
        source,
    })?;
    let shared = Arc::new(Shared {
        upstreams,
        limits,
        counters: Counters::default(),
        in_flight: Arc::new(Semaphore::new(limits.in_flight)),
        connections: Arc::new(Semaphore::new(limits.connections)),
    });
    let (stop, stopped) = watch::channel(());
    let udp = tokio::spawn(serve_udp(
        Arc::new(udp_socket),
        shared.clone(),
        stopped.clone(),
    ));
    let tcp = tokio::spawn(serve_tcp(tcp_listener, shared.clone(), stopped));
    tracing::debug!(%local, upstreams = ?shared.upstreams, ?limits, "DNS relay started");
    Ok(Relay {
        local,
        shared,
        stop,
        udp,
        tcp,
    })
}

/// Binds UDP and TCP to one address. With port 0, UDP picks the port and TCP takes the same; if
/// another socket holds that TCP port, a few other ports are tried.
async fn bind(listen: SocketAddr) -> Result<(UdpSocket, TcpListener), RelayError> {
    let err = |transport, source| RelayError::Bind {
        transport,
        addr: listen,
        source,
    };
    let attempts = if listen.port() == 0 { 16 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|e| err(Transport::Udp, e))?;
        let port = udp.local_addr().map_err(|e| err(Transport::Udp, e))?.port();
        match TcpListener::bind(SocketAddr::new(listen.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && listen.port() == 0 => last = Some(e),
            Err(e) => return Err(err(Transport::Tcp, e)),
        }
    }
    Err(err(
        Transport::Tcp,
        last.unwrap_or_else(|| io::ErrorKind::AddrInUse.into()),
    ))
}

/// Tries the upstreams in order with `attempt`, which sends the query to one and returns its reply
/// (already checked to be a response to this query). Returns what to relay, if anything.
async fn resolve<F, Fut>(upstreams: &[SocketAddr], query: &Query, mut attempt: F) -> Option<Vec<u8>>
where
    F: FnMut(SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<(Vec<u8>, Reply)>>,
{
    let mut fallback = None;
    for &upstream in upstreams {
        match attempt(upstream).await {
            Ok((reply, Reply::Answer)) => return Some(reply),
            Ok((reply, Reply::TryNext(rc))) => {
                tracing::debug!(id = query.id, %upstream, "DNS upstream answered {rc}: trying the next");
                fallback = Some(reply);
            }
            Err(e) => {
                tracing::debug!(id = query.id, %upstream, "DNS upstream failed: {e}");
            }
        }
    }
    fallback
}

/// The stop signal: resolves when the [`Relay`]'s sender is dropped.
async fn stopped(mut stop: watch::Receiver<()>) {
    while stop.changed().await.is_ok() {}
}

async fn serve_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>, stop: watch::Receiver<()>) {
    let counters = &shared.counters;
    let mut forwarding = JoinSet::new();
    let mut buf = vec![0u8; MAX_MESSAGE];
    let stop = stopped(stop);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(_) = forwarding.join_next(), if !forwarding.is_empty() => {}
            received = socket.recv_from(&mut buf) => {
                let (len, from) = match received {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!("DNS relay: receiving over UDP: {e}");
                        continue;
                    }
                };
                let bytes = &buf[..len];
                let query = match check_query(bytes) {
                    Ok(q) => q,
                    Err(why) => {
                        add(&counters.malformed);
                        tracing::debug!(%from, "DNS relay dropped a datagram: {why}");
                        continue;
                    }
                };
                add(&counters.udp_queries);
                // Never wait for a permit here: that would stop the loop receiving, and the
                // queries behind it would wait in the kernel for no one. Dropping is what a
                // loaded nameserver does, and the querier's libc retries.
                let Ok(permit) = shared.in_flight.clone().try_acquire_owned() else {
                    add(&counters.busy);
                    tracing::debug!(%from, id = query.id, "DNS relay busy: dropped a query");
                    continue;
                };
                let now = shared.limits.in_flight - shared.in_flight.available_permits();
                counters.peak_in_flight.fetch_max(now, Ordering::Relaxed);
                let (socket, shared, bytes) = (socket.clone(), shared.clone(), bytes.to_vec());
                forwarding.spawn(async move {
                    let _permit = permit;
                    let counters = &shared.counters;
                    tracing::debug!(%from, id = query.id, question = %query.question, "DNS query (UDP)");
                    let timeout = shared.limits.upstream_timeout;
                    let answer = resolve(&shared.upstreams, &query, |upstream| {
                        exchange_udp(upstream, &bytes, query.id, timeout)
                    })
                    .await;
                    match answer {
                        Some(answer) => match socket.send_to(&answer, from).await {
                            Ok(_) => add(&counters.answered),
                            Err(e) => tracing::debug!(%from, "DNS relay: answering over UDP: {e}"),
                        },
                        None => {
                            add(&counters.unanswered);
                            tracing::debug!(%from, id = query.id, "no DNS upstream answered");
                        }
                    }
                });
            }
        }
    }
    // Abandons the queries in flight and waits until they are gone, so that no task holds the
    // listening socket once the relay says it stopped.
    forwarding.shutdown().await;
}

/// One query to one upstream over UDP, from a fresh socket connected to it: a random source port
/// per query, and the kernel delivers nothing from any other address. Replies that are not to this
/// query are skipped until the timeout.
async fn exchange_udp(
    upstream: SocketAddr,
    query: &[u8],
    id: u16,
    timeout: Duration,
) -> io::Result<(Vec<u8>, Reply)> {
    let unspecified: IpAddr = match upstream {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind(SocketAddr::new(unspecified, 0)).await?;
    socket.connect(upstream).await?;
    let exchange = async {
        socket.send(query).await?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let len = socket.recv(&mut buf).await?;
            if let Some(verdict) = judge_reply(id, &buf[..len]) {
                buf.truncate(len);
                return Ok((buf, verdict));
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>, stop: watch::Receiver<()>) {
    let counters = &shared.counters;
    let mut connections = JoinSet::new();
    let stop = stopped(stop);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, most likely: give the open ones time to close
                        // rather than spin on an error that will repeat.
                        tracing::debug!("DNS relay: accepting over TCP: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
                    add(&counters.refused_connections);
                    tracing::debug!(%peer, "DNS relay busy: closed a TCP connection");
                    continue;
                };
                let shared = shared.clone();
                connections.spawn(async move {
                    let _permit = permit;
                    serve_tcp_connection(stream, peer, &shared).await;
                });
            }
        }
    }
    connections.shutdown().await;
}

/// One client's connection (RFC 1035 §4.2.2: each message behind its 2-byte length): its queries
/// one at a time, each on a new connection to the upstream (DNS over TCP is the rare retry after a
/// truncated answer, and a fresh connection carries no stale message from an earlier one). A
/// client that pipelines waits in order.
async fn serve_tcp_connection(mut stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    let counters = &shared.counters;
    let idle = shared.limits.idle;
    loop {
        let bytes = match tokio::time::timeout(idle, read_message(&mut stream)).await {
            Ok(Ok(Some(bytes))) => bytes,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::debug!(%peer, "DNS relay: reading over TCP: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "DNS relay: closed an idle TCP connection");
                return;
            }
        };
        let query = match check_query(&bytes) {
            Ok(q) => q,
            Err(why) => {
                add(&counters.malformed);
                tracing::debug!(%peer, "DNS relay closed a TCP connection: {why}");
                return;
            }
        };
        add(&counters.tcp_queries);
        tracing::debug!(%peer, id = query.id, question = %query.question, "DNS query (TCP)");
        let timeout = shared.limits.upstream_timeout;
        let answer = resolve(&shared.upstreams, &query, |upstream| {
            exchange_tcp(upstream, &bytes, query.id, timeout)
        })
        .await;
        let Some(answer) = answer else {
            // Closing tells the querier now; an open connection would keep it waiting.
            add(&counters.unanswered);
            tracing::debug!(%peer, id = query.id, "no DNS upstream answered");
            return;
        };
        match tokio::time::timeout(idle, write_message(&mut stream, &answer)).await {
            Ok(Ok(())) => add(&counters.answered),
            Ok(Err(e)) => {
                tracing::debug!(%peer, "DNS relay: answering over TCP: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "DNS relay: a TCP client took no answer: closed it");
                return;
            }
        }
    }
}

/// One query to one upstream over a new TCP connection.
async fn exchange_tcp(
    upstream: SocketAddr,
    query: &[u8],
    id: u16,
    timeout: Duration,
) -> io::Result<(Vec<u8>, Reply)> {
    let exchange = async {
        let mut stream = TcpStream::connect(upstream).await?;
        write_message(&mut stream, query).await?;
        let reply = read_message(&mut stream)
            .await?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "closed without answer"))?;
        match judge_reply(id, &reply) {
            Some(verdict) => Ok((reply, verdict)),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "answered something other than this query",
            )),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// Reads one length-prefixed message; `None` when the peer closed between messages.
async fn read_message(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u16::from_be_bytes(len) as usize;
    let mut message = vec![0u8; len];
    stream.read_exact(&mut message).await?;
    Ok(Some(message))
}

/// Writes one length-prefixed message, in one write: a prefix in a segment of its own is a
/// pattern some servers read badly (RFC 7766 §8 asks for one).
async fn write_message(stream: &mut TcpStream, message: &[u8]) -> io::Result<()> {
    let len = u16::try_from(message.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "DNS message over 64 KiB"))?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}
