//! Docker's embedded DNS server, imitated for the boxes: the resolver a compose file's containers
//! find at `nameserver 127.0.0.11`. Owns the answers (a pure function over the rig's names) and a
//! small UDP and TCP server on `127.0.0.11:53`, started inside one network namespace; leaves the
//! namespace, its links and the files that name the resolver to [`crate::boxes::network`] and
//! [`crate::boxes::files`].
//!
//! What is copied from Docker (moby `libnetwork/resolver.go`): it answers only inside the
//! container's network namespace (Docker listens on `127.0.0.11` there and redirects port 53 to
//! its listener with a DNAT rule in that namespace's `OUTPUT` chain; a packet to 127/8 from any
//! other namespace never reaches it), A records for the names it knows with a TTL of 600, no
//! records of other types for them, and only the first question of a message. What is not:
//! Docker forwards every other name to the host's servers; nothing a test does may leave the
//! machine, so here every other name is NXDOMAIN. Messages are read and written with
//! `hickory-proto`; nothing here parses DNS by hand beyond TCP's two-byte length prefix
//! (RFC 1035 §4.2.2).

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where Docker's embedded resolver answers, inside each container's network namespace.
pub const ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
/// The TTL of Docker's answers for the names it knows (moby `libnetwork/resolver.go`, `respTTL`).
pub const TTL: u32 = 600;

/// The names the resolver knows, each with one IPv4 address. Names are compared without case
/// and without a trailing dot, as DNS compares them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    a: BTreeMap<String, Ipv4Addr>,
}

impl Records {
    pub fn new() -> Records {
        Records::default()
    }

    /// Adds (or replaces) `name`'s address.
    pub fn insert(&mut self, name: &str, ip: Ipv4Addr) -> &mut Records {
        self.a.insert(normal(name), ip);
        self
    }

    pub fn get(&self, name: &str) -> Option<Ipv4Addr> {
        self.a.get(&normal(name)).copied()
    }

    /// (name, address) in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Ipv4Addr)> {
        self.a.iter().map(|(n, ip)| (n.as_str(), *ip))
    }
}

fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The reply to one DNS message, or `None` when it gets none: a message that cannot be read (a
/// reply to it could not even carry its id), or one that is itself a response.
///
/// A query for a known name: its A record, or no records (NOERROR) for any other type, so that a
/// client asking for A and AAAA at once takes the A answer. An unknown name: NXDOMAIN. Any other
/// opcode: NOTIMP. Only the first question is answered, as Docker does.
pub fn answer(query: &[u8], records: &Records) -> Option<Vec<u8>> {
    let req = Message::from_vec(query).ok()?;
    if req.message_type() != MessageType::Query {
        return None;
    }
    let mut resp = Message::new();
    resp.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(req.op_code())
        .set_recursion_desired(req.recursion_desired())
        .set_recursion_available(true);
    if req.op_code() != OpCode::Query {
        resp.set_response_code(ResponseCode::NotImp);
        return resp.to_vec().ok();
    }
    let Some(q) = req.queries().first() else {
        resp.set_response_code(ResponseCode::FormErr);
        return resp.to_vec().ok();
    };
    resp.add_query(q.clone());
    let name = q.name().to_ascii();
    match records.get(&name) {
        None => {
            resp.set_response_code(ResponseCode::NXDomain);
        }
        Some(ip) => {
            resp.set_authoritative(true);
            let wants_a = matches!(q.query_type(), RecordType::A | RecordType::ANY)
                && matches!(q.query_class(), DNSClass::IN | DNSClass::ANY);
            if wants_a {
                resp.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(ip))));
            }
        }
    }
    resp.to_vec().ok()
}

/// The resolver while it serves: dropping it stops both listeners (on the runtime they were
/// started on).
#[derive(Debug)]
pub struct Server {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Binds UDP and TCP on `addr` (`127.0.0.11:53` in a box, see [`ADDRESS`]) in the network
/// namespace of the calling thread and answers from `records` until dropped. Run it on a runtime
/// whose thread sits in the box's namespace (`crate::boxes::network::Netns`).
pub async fn serve(addr: SocketAddr, records: Records) -> std::io::Result<Server> {
    let udp = tokio::net::UdpSocket::bind(addr).await?;
    let tcp = tokio::net::TcpListener::bind(addr).await?;
    let (udp_addr, tcp_addr) = (udp.local_addr()?, tcp.local_addr()?);
    let records = std::sync::Arc::new(records);
    let r = records.clone();
    let udp_task = tokio::spawn(async move {
        // A DNS message over UDP is at most 65535 bytes.
        let mut buf = vec![0u8; 65_535];
        loop {
            let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                continue;
            };
            if let Some(reply) = answer(&buf[..n], &r) {
                let _ = udp.send_to(&reply, from).await;
            }
        }
    });
    let tcp_task = tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = tcp.accept().await else {
                continue;
            };
            let r = records.clone();
            tokio::spawn(async move {
                let _ = serve_tcp(conn, &r).await;
            });
        }
    });
    Ok(Server {
        tasks: vec![udp_task, tcp_task],
        udp: udp_addr,
        tcp: tcp_addr,
    })
}

/// One TCP connection: length-prefixed messages until the client closes it or stays silent.
async fn serve_tcp(mut conn: tokio::net::TcpStream, records: &Records) -> std::io::Result<()> {
    const IDLE: Duration = Duration::from_secs(10);
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(IDLE, conn.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        tokio::time::timeout(IDLE, conn.read_exact(&mut msg))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let Some(reply) = answer(&msg, records) else {
            return Ok(());
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        conn.write_all(&n.to_be_bytes()).await?;
        conn.write_all(&reply).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn records() -> Records {
        let mut r = Records::new();
        r.insert("github.fake", Ipv4Addr::new(10, 231, 3, 1))
            .insert("0123456789ab", Ipv4Addr::new(10, 231, 3, 2));
        r
    }

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(0xbeef)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    fn reply(bytes: &[u8]) -> Message {
        Message::from_vec(&answer(bytes, &records()).expect("a reply")).unwrap()
    }

    fn a_records(m: &Message) -> Vec<Ipv4Addr> {
        m.answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_known_name_gets_its_address_whatever_its_case_or_final_dot() {
        for name in ["github.fake", "GitHub.Fake.", "0123456789ab"] {
            let m = reply(&query(name, RecordType::A));
            assert_eq!(m.id(), 0xbeef);
            assert_eq!(m.message_type(), MessageType::Response);
            assert_eq!(m.response_code(), ResponseCode::NoError, "{name}");
            assert!(m.recursion_desired());
            assert_eq!(m.queries().len(), 1);
            let want = records().get(name).unwrap();
            assert_eq!(a_records(&m), vec![want], "{name}");
            assert_eq!(m.answers()[0].ttl(), TTL);
            // The answer names the name as asked (every name on the wire is absolute).
            assert_eq!(
                m.answers()[0].name().to_ascii().trim_end_matches('.'),
                name.trim_end_matches('.')
            );
        }
    }

    #[test]
    fn other_types_for_a_known_name_are_empty_answers_not_errors() {
        for t in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
            let m = reply(&query("github.fake", t));
            assert_eq!(m.response_code(), ResponseCode::NoError, "{t}");
            assert!(m.answers().is_empty(), "{t}: {:?}", m.answers());
        }
    }

    #[test]
    fn an_unknown_name_is_nxdomain_and_nothing_is_forwarded() {
        for name in ["github.com", "example.org.", "fake", "sub.github.fake"] {
            let m = reply(&query(name, RecordType::A));
            assert_eq!(m.response_code(), ResponseCode::NXDomain, "{name}");
            assert!(m.answers().is_empty());
        }
    }

    #[test]
    fn garbage_and_responses_get_no_reply_other_opcodes_get_notimp() {
        assert_eq!(answer(b"", &records()), None);
        assert_eq!(answer(&[0xff; 7], &records()), None);
        let mut resp = Message::from_vec(&query("github.fake", RecordType::A)).unwrap();
        resp.set_message_type(MessageType::Response);
        assert_eq!(answer(&resp.to_vec().unwrap(), &records()), None);
        let mut notify = Message::from_vec(&query("github.fake", RecordType::A)).unwrap();
        notify.set_op_code(OpCode::Notify);
        let m = reply(&notify.to_vec().unwrap());
        assert_eq!(m.response_code(), ResponseCode::NotImp);
        let mut empty = Message::new();
        empty.set_id(7).set_message_type(MessageType::Query);
        let m = reply(&empty.to_vec().unwrap());
        assert_eq!((m.id(), m.response_code()), (7, ResponseCode::FormErr));
    }

    #[test]
    fn the_server_answers_over_udp_and_tcp() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // Loopback, port 0: the unit test needs no namespace and no privilege.
            let s = serve("127.0.0.1:0".parse().unwrap(), records())
                .await
                .unwrap();
            let q = query("github.fake", RecordType::A);
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            udp.send_to(&q, s.udp).await.unwrap();
            let mut buf = [0u8; 512];
            let n = udp.recv(&mut buf).await.unwrap();
            let m = Message::from_vec(&buf[..n]).unwrap();
            assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 231, 3, 1)]);

            let mut tcp = tokio::net::TcpStream::connect(s.tcp).await.unwrap();
            for name in ["0123456789ab", "nowhere.fake"] {
                let q = query(name, RecordType::A);
                tcp.write_all(&(q.len() as u16).to_be_bytes())
                    .await
                    .unwrap();
                tcp.write_all(&q).await.unwrap();
                let mut len = [0u8; 2];
                tcp.read_exact(&mut len).await.unwrap();
                let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
                tcp.read_exact(&mut msg).await.unwrap();
                let m = Message::from_vec(&msg).unwrap();
                match records().get(name) {
                    Some(ip) => assert_eq!(a_records(&m), vec![ip]),
                    None => assert_eq!(m.response_code(), ResponseCode::NXDomain),
                }
            }
        });
    }
}
