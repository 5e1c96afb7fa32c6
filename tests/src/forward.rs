//! A TCP forwarder from the node's bridge address to a loopback server, with a gate.
//!
//! Pods cannot reach loopback. The harness's servers (OpenSearch, MinIO) listen on `127.0.0.1`
//! (their certificates, the harness's own clients and the other tests use that address); a
//! [`Forward`] listens on the bridge's address and copies bytes both ways, so a Pod reaches the
//! server as `http://<bridge address>:<port>` (the `Host` header passes unchanged: S3 signatures
//! still verify). Closed (held) the gate keeps accepted connections waiting: a test can look at
//! a running agent from the host while the agent waits for its first answer.

use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Shared between the forwarder's threads.
struct State {
    stop: AtomicBool,
    /// Connections accepted so far.
    accepted: AtomicUsize,
    /// Whether the gate is open, and its waiters.
    open: Mutex<bool>,
    opened: Condvar,
}

/// A running forwarder, stopped on drop (connections in flight end with their peers).
pub struct Forward {
    addr: SocketAddr,
    state: Arc<State>,
}

impl Forward {
    /// Listens on a free port of `ip` and forwards every connection to `127.0.0.1:target`. The
    /// gate starts open.
    pub fn start(ip: Ipv4Addr, target: u16) -> Result<Self> {
        Self::start_at(SocketAddr::from((ip, 0)), target)
    }

    /// As [`Forward::start`], listening on `addr` (a port of 0 picks a free one).
    pub fn start_at(addr: SocketAddr, target: u16) -> Result<Self> {
        let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        listener
            .set_nonblocking(true)
            .context("making the listener non-blocking")?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let state = Arc::new(State {
            stop: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            open: Mutex::new(true),
            opened: Condvar::new(),
        });
        let shared = state.clone();
        std::thread::Builder::new()
            .name(format!("cairn-forward-{}", addr.port()))
            .spawn(move || accept_loop(&listener, target, &shared))
            .context("starting the forwarder thread")?;
        Ok(Self { addr, state })
    }

    /// `<bridge address>:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<bridge address>:<port>`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the gate: new connections wait until [`Forward::open`].
    pub fn hold(&self) {
        *self.state.open.lock().unwrap_or_else(|e| e.into_inner()) = false;
    }

    /// Opens the gate; waiting connections proceed.
    pub fn open(&self) {
        *self.state.open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.state.opened.notify_all();
    }

    /// How many connections were accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        self.open();
    }
}

fn accept_loop(listener: &TcpListener, target: u16, state: &Arc<State>) {
    while !state.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                state.accepted.fetch_add(1, Ordering::Relaxed);
                let state = state.clone();
                let _ = std::thread::Builder::new()
                    .name("cairn-forward-conn".into())
                    .spawn(move || {
                        wait_open(&state);
                        if !state.stop.load(Ordering::Relaxed) {
                            let _ = pipe(client, target);
                        }
                    });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn wait_open(state: &State) {
    let mut open = state.open.lock().unwrap_or_else(|e| e.into_inner());
    while !*open && !state.stop.load(Ordering::Relaxed) {
        open = state.opened.wait(open).unwrap_or_else(|e| e.into_inner());
    }
}

/// Copies both ways between `client` and `127.0.0.1:target` until both sides are done.
fn pipe(client: TcpStream, target: u16) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    let server = TcpStream::connect((Ipv4Addr::LOCALHOST, target))?;
    let (client2, server2) = (client.try_clone()?, server.try_clone()?);
    let upstream = std::thread::spawn(move || copy_then_close(client2, server2));
    copy_then_close(server, client);
    let _ = upstream.join();
    Ok(())
}

fn copy_then_close(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
