//! Helpers for a dockerd that a test runs inside a box: where the binaries are, the daemon
//! configuration the project uses, and waiting for the API. Talks only to the socket it is given.

use super::boxes::Error;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// The dockerd the tests run (Debian 13's 26.x, see `.ci/install-deps`).
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// The CLI that belongs to it; `/usr/local/bin/docker` may be a newer one that shadows it on PATH.
pub const DOCKER: &str = "/usr/bin/docker";
/// The socket the tests' dockerd listens on, inside the box.
pub const SOCKET: &str = "/run/docker.sock";

/// `daemon.json` for a dockerd in a box: overlay2, the cgroupfs driver, and `mtu` on the default
/// bridge and (dockerd >= 24) on every network created later.
pub fn daemon_json(mtu: u32) -> String {
    serde_json::json!({
        "storage-driver": "overlay2",
        "exec-opts": ["native.cgroupdriver=cgroupfs"],
        "mtu": mtu,
        "default-network-opts": {"bridge": {"com.docker.network.driver.mtu": mtu.to_string()}},
    })
    .to_string()
}

/// True when `GET /_ping` on the unix socket at `socket` answers 200 `OK`.
pub fn ping(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.starts_with("HTTP/1.1 200") && resp.ends_with("OK")
}

/// Polls [`ping`] every 20 ms until it answers or `timeout` passes; returns how long it took.
/// `alive` is asked on every round so that a dockerd that died fails at once, not at the deadline.
pub fn wait_for_ping(
    socket: &Path,
    timeout: Duration,
    mut alive: impl FnMut() -> bool,
) -> Result<Duration, Error> {
    let start = Instant::now();
    loop {
        if ping(socket) {
            return Ok(start.elapsed());
        }
        if !alive() {
            return Err(Error::Setup(format!(
                "dockerd exited before {} answered",
                socket.display()
            )));
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: format!("GET /_ping on {}", socket.display()),
                after: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_json_sets_the_mtu_twice() {
        let v: serde_json::Value = serde_json::from_str(&daemon_json(1400)).unwrap();
        assert_eq!(v["mtu"], 1400);
        assert_eq!(
            v["default-network-opts"]["bridge"]["com.docker.network.driver.mtu"],
            "1400"
        );
        assert_eq!(v["storage-driver"], "overlay2");
    }
}
