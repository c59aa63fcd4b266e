//! Machine-wide named locks made of abstract unix socket names: held while the socket is open,
//! released by the kernel when the holder exits however it exits, and they leave no file behind.
//! Abstract names are per network namespace: a lock covers the processes of one (the host's).

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::time::{Duration, Instant};

/// A held lock; dropping it releases it.
#[derive(Debug)]
pub struct Lock {
    _socket: UnixListener,
    name: String,
}

impl Lock {
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Takes the lock `name` if it is free.
pub fn try_lock(name: &str) -> io::Result<Option<Lock>> {
    let full = format!("sysrunner-testkit/{name}");
    let addr = SocketAddr::from_abstract_name(full.as_bytes())?;
    match UnixListener::bind_addr(&addr) {
        Ok(s) => Ok(Some(Lock {
            _socket: s,
            name: name.to_owned(),
        })),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Ok(None),
        Err(e) => Err(e),
    }
}

/// Waits for the lock `name`, polling every 20 ms, for at most `timeout`.
pub fn lock(name: &str, timeout: Duration) -> io::Result<Lock> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(l) = try_lock(name)? {
            return Ok(l);
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("lock {name:?} still held after {timeout:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_exclusive_until_dropped() {
        let name = format!("unit-test-{}", std::process::id());
        let a = try_lock(&name).unwrap().expect("free");
        assert!(try_lock(&name).unwrap().is_none());
        drop(a);
        let b = lock(&name, Duration::from_secs(5)).unwrap();
        assert_eq!(b.name(), name);
    }
}
