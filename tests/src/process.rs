//! Child processes that die with the test: their own process group, killed on drop, and
//! `PR_SET_PDEATHSIG` so the kernel kills them if the test process dies without unwinding.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process. Test
//! threads come and go (and a control plane is shared between tests), so every child is forked by
//! one long-lived spawner thread that lives as long as the test process.

use anyhow::{Context, Result, anyhow};
use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` from the spawner thread, in a new process group, with `PR_SET_PDEATHSIG=SIGKILL`.
fn spawn_owned(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let parent = std::process::id();
    cmd.process_group(0);
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (prctl, getppid) and builds an io::Error from an errno without allocating.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl: then nobody would ever kill us.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        // The sender lives in a static, so this thread lives until the process exits.
        std::thread::Builder::new()
            .name("cairn-tests-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| panic!("cannot start the process spawner thread: {e}"));
        tx
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("the process spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("the process spawner thread did not answer"))?
}

/// A long-running child process (and its process group), killed when dropped.
pub struct OwnedProcess {
    name: String,
    pid: u32,
    log: PathBuf,
    child: Mutex<Option<Child>>,
}

impl OwnedProcess {
    /// Starts `program args` with stdout and stderr going to `log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("duplicating {}", log.display()))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child =
            spawn_owned(cmd).with_context(|| format!("starting {name} ({})", program.display()))?;
        Ok(Self {
            name: name.to_string(),
            pid: child.id(),
            log: log.to_path_buf(),
            child: Mutex::new(Some(child)),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the log (for error messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&self) -> Result<Option<ExitStatus>> {
        let mut guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            None => Err(anyhow!("{} was stopped", self.name)),
            Some(child) => child
                .try_wait()
                .with_context(|| format!("checking on {}", self.name)),
        }
    }

    /// Kills the whole process group and reaps the process. Idempotent.
    pub fn stop(&self) {
        let mut guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut child) = guard.take() {
            // Only signal the group while its leader is unreaped: then the id cannot be reused.
            if matches!(child.try_wait(), Ok(None)) {
                // SAFETY: plain syscall; the group id is our own child's pid.
                unsafe {
                    libc::killpg(self.pid as libc::pid_t, libc::SIGKILL);
                }
            }
            let _ = child.wait();
        }
    }
}

impl Drop for OwnedProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A process stopped with SIGSTOP (a server that hangs), continued with SIGCONT on drop, so
/// a failing test does not leave it frozen.
pub struct Frozen(u32);

impl Frozen {
    pub fn new(pid: u32) -> Self {
        // SAFETY: plain syscall; the caller names a process of its own.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGSTOP);
        }
        Self(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe {
            libc::kill(self.0 as libc::pid_t, libc::SIGCONT);
        }
    }
}

/// Whether any process is left in the process group `pgid`.
pub fn process_group_alive(pgid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::killpg(pgid as libc::pid_t, 0) == 0 }
}

/// Runs `start` (which picks its ports with [`free_port`]) up to three times while it fails
/// because a port was taken between choosing and binding it (by a client's ephemeral port, or
/// another process).
pub fn with_fresh_ports<T>(mut start: impl FnMut() -> Result<T>) -> Result<T> {
    let mut attempt = 1;
    loop {
        match start() {
            Err(e)
                if attempt < 3
                    && format!("{e:#}")
                        .to_lowercase()
                        .contains("address already in use") =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// A free loopback port, never the same twice in this process, taken from below the kernel's
/// ephemeral range: a port bound to 0 and released can go to any client's outgoing connection
/// before our server binds it (CI saw OpenSearch lose its HTTP port that way), while a port outside
/// that range is only ever taken by someone binding it by number.
pub fn free_port() -> Result<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let (low, high) = below_ephemeral_range();
    let span = u32::from(high - low);
    // Processes start at different points of the range, so concurrent test binaries rarely probe
    // the same ports.
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for step in 0..span {
        let port = low + ((start + step) % span) as u16;
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    Err(anyhow!("no free loopback port in {low}..{high}"))
}

/// The ports from 20000 up to where the kernel's ephemeral range starts
/// (`/proc/sys/net/ipv4/ip_local_port_range`, 32768 when unreadable).
fn below_ephemeral_range() -> (u16, u16) {
    const LOW: u16 = 20_000;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|&start| start > LOW + 1_000)
        .unwrap_or(32_768);
    (LOW, ephemeral_start)
}

/// The temp dirs `<prefix>*` of test processes that died without cleaning up (their servers
/// died with them, but files, mounts and devices may stay). Each dir names its owner in
/// `owner.pid`; dirs without one (being created right now) are left alone.
pub fn stale_dirs(prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("owner.pid"))
                .ok()
                .and_then(|pid| pid.trim().parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .map(|e| e.path())
        .collect()
}
