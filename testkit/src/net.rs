//! Free loopback ports and listeners for the binary under test and the test servers.

use crate::{io_err, TestkitError};
use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;

///
/// Panics only if the loopback interface cannot be bound at all, which leaves no
/// test able to run.
pub fn free_port() -> u16 {
    match try_free_ports(1) {
        Ok(ports) => ports[0],
        Err(e) => panic!("free_port: {e}"),
    }
}

/// A free loopback listener and a current-thread runtime to serve it on (the test
/// servers run on their own thread so they work under any test's runtime).
pub fn loopback_server(
) -> Result<(SocketAddr, tokio::runtime::Runtime, tokio::net::TcpListener), String> {
    let listener = free_listener().map_err(|e| e.to_string())?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("local_addr: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("set_nonblocking: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let listener = {
        let _entered = runtime.enter();
        tokio::net::TcpListener::from_std(listener).map_err(|e| format!("listener: {e}"))?
    };
    Ok((addr, runtime, listener))
}

/// A listener on a free 127.0.0.1 port, for fake servers inside a test. Its port is
/// recorded so that [`free_port`] in the same process never hands it out (binding
/// `127.0.0.1:0` directly could get a port just returned by `free_port` and not
/// yet bound by its taker).
pub fn free_listener() -> Result<TcpListener, TestkitError> {
    let mut listeners = bind_unique(1)?;
    listeners
        .pop()
        .ok_or_else(|| no_port("bind_unique(1) returned nothing"))
}

/// `n` distinct free loopback ports (all listeners are held until every port is
/// chosen, so they differ from each other).
pub(crate) fn try_free_ports(n: usize) -> Result<Vec<u16>, TestkitError> {
    let listeners = bind_unique(n)?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(io_err("local_addr of 127.0.0.1:0 listener"))
        })
        .collect()
}

fn no_port(why: &str) -> TestkitError {
    TestkitError::Io {
        context: "finding a free loopback port".to_string(),
        source: std::io::Error::new(std::io::ErrorKind::AddrInUse, why.to_string()),
    }
}

/// `n` listeners on 127.0.0.1 whose ports were never handed out before in this
/// process: parallel tests in one test binary would otherwise race for a port the
/// kernel gives out again right after the first caller released it.
fn bind_unique(n: usize) -> Result<Vec<TcpListener>, TestkitError> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let mut rejected = Vec::new();
    let mut chosen = Vec::with_capacity(n);
    while chosen.len() < n {
        if rejected.len() > 200 {
            return Err(no_port(
                "bind 127.0.0.1:0 kept returning ports already handed out",
            ));
        }
        let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("bind 127.0.0.1:0"))?;
        let port = l
            .local_addr()
            .map_err(io_err("local_addr of 127.0.0.1:0 listener"))?
            .port();
        if handed_out.insert(port) {
            chosen.push(l);
        } else {
            // Held until we return, so the next bind gets another port.
            rejected.push(l);
        }
    }
    Ok(chosen)
}
