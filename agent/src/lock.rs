//! restic-compatible repository locks.
//!
//! rustic_core takes no locks, but `restic` (run by a user next to us) does: `restic prune`
//! deletes every pack file the index does not know, which includes the packs of a backup in
//! flight. So while a backup or `forget` runs we hold a restic lock: a file in `locks/` named by
//! the SHA-256 of its content, which is the JSON `{time, exclusive, hostname, username, pid,
//! uid, gid}` encrypted with the repository's master key exactly like restic's own (AES-256-CTR
//! with a Poly1305-AES tag, nonce first, tag last). restic then refuses to prune while we work, and
//! `restic list locks`/`cat lock`/`unlock` read our locks.
//!
//! As in restic: a lock is refreshed (rewritten with a new time) every 5 minutes; a lock older
//! than 30 minutes, or of this host whose process is gone, is stale and removed on start; a
//! non-exclusive lock conflicts with a live exclusive one, an exclusive lock with any live lock.
//! Pruning needs an exclusive lock ([`RepoLock::upgrade`]).

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use aes256ctr_poly1305aes::Aes256CtrPoly1305Aes;
use aes256ctr_poly1305aes::aead::AeadInPlace;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use rustic_core::{OpenStatus, Repository};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{AgentError, Result};
use crate::files::Store;

/// A lock not refreshed for this long belongs to a dead process (restic's rule).
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often a held lock is rewritten with a new time (restic's interval).
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

/// restic's `Lock` as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockFile {
    pub time: String,
    pub exclusive: bool,
    pub hostname: String,
    #[serde(default)]
    pub username: String,
    pub pid: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uid: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gid: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl LockFile {
    /// A lock of this process, now. In a Job, its user name says which cluster's cairn holds
    /// it ([`cairn_api::naming::lock_user`]).
    pub fn ours(exclusive: bool) -> Self {
        // SAFETY: plain syscalls without arguments.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let username = match cluster_id() {
            Some(id) => cairn_api::naming::lock_user(&id),
            None => std::env::var("USER").unwrap_or_default(),
        };
        Self {
            time: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            exclusive,
            hostname: hostname(),
            username,
            pid: i64::from(std::process::id()),
            uid,
            gid,
        }
    }

    /// restic's rule: older than [`STALE_AFTER`], or of this host and its process is gone.
    pub fn is_stale(&self, now: DateTime<Utc>, host: &str) -> bool {
        let Ok(time) = DateTime::parse_from_rfc3339(&self.time) else {
            // A time nobody can read is as good as no time.
            return true;
        };
        let age = now.signed_duration_since(time.with_timezone(&Utc));
        if age.to_std().is_ok_and(|a| a > STALE_AFTER) {
            return true;
        }
        self.hostname == host && !process_alive(self.pid)
    }

    /// A decrypted lock file: JSON, or (restic in a version 2 repository) the byte 2 and the
    /// JSON compressed with zstd.
    pub fn parse(plain: &[u8]) -> Result<Self> {
        let json = match plain.split_first() {
            Some((2, compressed)) => zstd::decode_all(compressed)
                .map_err(|e| AgentError::Repository(format!("a lock file does not unpack: {e}")))?,
            _ => plain.to_vec(),
        };
        serde_json::from_slice(&json).map_err(|e| AgentError::json("lock", e))
    }

    fn describe(&self) -> String {
        format!(
            "{} lock of {} pid {} since {}",
            if self.exclusive { "an exclusive" } else { "a" },
            self.hostname,
            self.pid,
            self.time
        )
    }
}

/// The cluster this Job runs in, as the controller names it (`CAIRN_CLUSTER_ID`).
fn cluster_id() -> Option<String> {
    std::env::var("CAIRN_CLUSTER_ID")
        .ok()
        .filter(|id| !id.trim().is_empty())
}

/// What the controller knew when it launched this run's Job: the pods of cairn's Jobs that
/// were not finished (`CAIRN_LIVE_PODS`, comma-separated names), the launch time
/// (`CAIRN_LAUNCHED_AT`, RFC 3339) and its cluster (`CAIRN_CLUSTER_ID`). A lock of a pod of
/// this cluster's cairn (its host name is the pod's name, its user names the cluster) that is
/// none of them and is older than the launch has no live holder: the pod ended (killed,
/// evicted, deleted) without removing it. Anything else, another cluster's cairn sharing the
/// repository among it, follows restic's rules.
#[derive(Clone, Debug, Default)]
pub struct LivePods {
    launched_at: Option<DateTime<Utc>>,
    names: Vec<String>,
    /// [`cairn_api::naming::lock_user`] of this cluster.
    user: String,
}

impl LivePods {
    pub fn new(launched_at: DateTime<Utc>, names: Vec<String>, cluster_id: &str) -> Self {
        Self {
            launched_at: Some(launched_at),
            names,
            user: cairn_api::naming::lock_user(cluster_id),
        }
    }

    /// From the environment the controller sets; without `CAIRN_LAUNCHED_AT` or
    /// `CAIRN_CLUSTER_ID`, none.
    pub fn from_env() -> Self {
        let (Some(at), Some(cluster)) = (
            std::env::var("CAIRN_LAUNCHED_AT")
                .ok()
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok()),
            cluster_id(),
        ) else {
            return Self::default();
        };
        let names = std::env::var("CAIRN_LIVE_PODS").unwrap_or_default();
        let names = names
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        Self::new(at.with_timezone(&Utc), names, &cluster)
    }

    /// Whether `lock` was left by a pod of cairn's Jobs that no longer runs.
    pub fn left_by_dead_pod(&self, lock: &LockFile) -> bool {
        let Some(launched_at) = self.launched_at else {
            return false;
        };
        if lock.username != self.user || !cairn_api::naming::is_locking_pod_hostname(&lock.hostname)
        {
            return false;
        }
        // A pod's host name is its name cut to 63 characters.
        if self.names.iter().any(|n| n.starts_with(&lock.hostname)) {
            return false;
        }
        DateTime::parse_from_rfc3339(&lock.time).is_ok_and(|t| t.with_timezone(&Utc) < launched_at)
    }
}

/// The host name, as restic records it.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer and its length are valid; the result is NUL-terminated on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn process_alive(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The repository's master key, to encrypt and decrypt lock files as restic does.
#[derive(Clone)]
pub struct Crypto(aes256ctr_poly1305aes::Key);

impl Crypto {
    pub fn of(repo: &Repository<OpenStatus>) -> Result<Self> {
        let key = repo.key();
        if key.encrypt.len() != 32 || key.mac.k.len() != 16 || key.mac.r.len() != 16 {
            return Err(AgentError::Repository(
                "the repository's master key has an unexpected size".into(),
            ));
        }
        let mut k = aes256ctr_poly1305aes::Key::default();
        k[0..32].copy_from_slice(&key.encrypt);
        k[32..48].copy_from_slice(&key.mac.k);
        k[48..64].copy_from_slice(&key.mac.r);
        Ok(Self(k))
    }

    pub fn encrypt(&self, plain: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = aes256ctr_poly1305aes::Nonce::default();
        random(&mut nonce)?;
        let mut out = Vec::with_capacity(plain.len() + 32);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = Aes256CtrPoly1305Aes::new(&self.0)
            .encrypt_in_place_detached(&nonce, &[], &mut out[16..])
            .map_err(|_| AgentError::Repository("encrypting a lock file failed".into()))?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>> {
        if data.len() < 32 {
            return Err(AgentError::Repository("a lock file is too short".into()));
        }
        let nonce = aes256ctr_poly1305aes::Nonce::from_slice(&data[..16]);
        let tag = aes256ctr_poly1305aes::Tag::from_slice(&data[data.len() - 16..]);
        let mut plain = data[16..data.len() - 16].to_vec();
        Aes256CtrPoly1305Aes::new(&self.0)
            .decrypt_in_place_detached(nonce, &[], &mut plain, tag)
            .map_err(|_| AgentError::Repository("a lock file does not decrypt".into()))?;
        Ok(plain)
    }
}

fn random(buf: &mut [u8]) -> Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| AgentError::io("read /dev/urandom", e))
}

struct Inner {
    store: Store,
    live_pods: LivePods,
    crypto: Crypto,
    /// The id of our lock file and whether it is exclusive.
    current: Mutex<Option<(String, bool)>>,
    stop: Mutex<bool>,
    wake: Condvar,
}

/// The locks found by [`Inner::sweep`].
#[derive(Default)]
struct Swept {
    /// Live locks of other processes.
    live: Vec<LockFile>,
    /// Lock files that cannot be read (another repository's key, damaged): left alone.
    unreadable: Vec<String>,
    /// Locks removed because their holders are gone.
    removed: u64,
}

impl Inner {
    /// No lock held yet; the live pods from the controller's environment.
    fn new(store: Store, repo: &Repository<OpenStatus>) -> Result<Self> {
        Ok(Self {
            store,
            live_pods: LivePods::from_env(),
            crypto: Crypto::of(repo)?,
            current: Mutex::new(None),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        })
    }

    /// The other processes' live locks (not `ours`); stale ones are removed on the way.
    fn live_locks(&self, ours: &[&str]) -> Result<Vec<LockFile>> {
        Ok(self.sweep(ours)?.live)
    }

    /// Every lock but `ours`, read; those whose holders are gone removed.
    fn sweep(&self, ours: &[&str]) -> Result<Swept> {
        let host = hostname();
        let now = Utc::now();
        let mut swept = Swept::default();
        for id in self.store.list("locks")? {
            if ours.contains(&id.as_str()) {
                continue;
            }
            let data = match self.store.read("locks", &id) {
                Ok(d) => d,
                // Removed meanwhile by its owner.
                Err(_) => continue,
            };
            let lock = match self.crypto.decrypt(&data).and_then(|p| LockFile::parse(&p)) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(lock = %id, error = %e, "ignoring a lock file that cannot be read");
                    swept.unreadable.push(id);
                    continue;
                }
            };
            let why = if lock.is_stale(now, &host) {
                "removing a stale lock"
            } else if self.live_pods.left_by_dead_pod(&lock) {
                "removing the lock of a pod of cairn's that no longer runs"
            } else {
                swept.live.push(lock);
                continue;
            };
            tracing::info!(lock = %id, "{why}: {}", lock.describe());
            self.store.remove("locks", &id)?;
            swept.removed += 1;
        }
        Ok(swept)
    }

    fn conflict(&self, exclusive: bool, ours: &[&str]) -> Result<Option<LockFile>> {
        Ok(self
            .live_locks(ours)?
            .into_iter()
            .find(|l| exclusive || l.exclusive))
    }

    /// Writes a lock file of ours; returns its id.
    fn write(&self, exclusive: bool) -> Result<String> {
        let plain = serde_json::to_vec(&LockFile::ours(exclusive))
            .map_err(|e| AgentError::json("lock", e))?;
        let data = self.crypto.encrypt(&plain)?;
        let id = hex::encode(Sha256::digest(&data));
        self.store.write("locks", &id, Bytes::from(data))?;
        Ok(id)
    }

    /// Takes the lock: fails if another live lock conflicts, also just after writing ours (two
    /// processes locking at once both back off, as in restic).
    fn take(&self, exclusive: bool) -> Result<()> {
        let previous = self
            .current
            .lock()
            .map_err(|_| AgentError::Repository("lock state poisoned".into()))?
            .clone();
        let old = previous.as_ref().map(|(id, _)| id.as_str());
        let ours: Vec<&str> = old.into_iter().collect();
        if let Some(l) = self.conflict(exclusive, &ours)? {
            return Err(locked(&self.store, &l));
        }
        let id = self.write(exclusive)?;
        if let Ok(mut c) = self.current.lock() {
            *c = Some((id.clone(), exclusive));
        }
        let ours: Vec<&str> = old.into_iter().chain([id.as_str()]).collect();
        if let Some(l) = self.conflict(exclusive, &ours)? {
            let _ = self.store.remove("locks", &id);
            if let Ok(mut c) = self.current.lock() {
                *c = previous;
            }
            return Err(locked(&self.store, &l));
        }
        if let Some((old, _)) = previous {
            self.store.remove("locks", &old)?;
        }
        Ok(())
    }

    /// Rewrites our lock with a new time.
    fn refresh(&self) -> Result<()> {
        let Some((old, exclusive)) = self.current.lock().ok().and_then(|c| c.clone()) else {
            return Ok(());
        };
        let id = self.write(exclusive)?;
        if let Ok(mut c) = self.current.lock() {
            *c = Some((id, exclusive));
        }
        self.store.remove("locks", &old)
    }
}

fn locked(store: &Store, l: &LockFile) -> AgentError {
    AgentError::Repository(format!(
        "{} is locked: {} (a stale lock is removed after {} minutes)",
        store.name(),
        l.describe(),
        STALE_AFTER.as_secs() / 60
    ))
}

/// `cairn-agent unlock`: removes the locks whose holders are gone, by the rule a run applies
/// before it locks, and takes none; the live ones (and unreadable files) stay.
pub fn remove_stale(
    store: Store,
    repo: &Repository<OpenStatus>,
) -> Result<cairn_api::result::UnlockResult> {
    let swept = Inner::new(store, repo)?.sweep(&[])?;
    let holders: Vec<String> = swept
        .live
        .iter()
        .map(LockFile::describe)
        .chain(
            swept
                .unreadable
                .iter()
                .map(|id| format!("a lock file that cannot be read ({id})")),
        )
        .collect();
    for h in &holders {
        tracing::info!("kept: {h}");
    }
    Ok(cairn_api::result::UnlockResult::with_holders(
        swept.removed,
        &holders,
    ))
}

/// A lock we hold, refreshed in the background, removed on drop and on SIGTERM.
pub struct RepoLock {
    inner: Arc<Inner>,
    refresher: Option<std::thread::JoinHandle<()>>,
    _on_terminate: crate::terminate::Registered,
}

impl RepoLock {
    /// Removes stale locks and takes a lock (exclusive or not).
    pub fn acquire(store: Store, repo: &Repository<OpenStatus>, exclusive: bool) -> Result<Self> {
        let inner = Arc::new(Inner::new(store, repo)?);
        inner.take(exclusive)?;
        tracing::info!(exclusive, "repository locked");
        let bg = inner.clone();
        let refresher = std::thread::Builder::new()
            .name("cairn-lock".into())
            .spawn(move || {
                let Ok(mut stopped) = bg.stop.lock() else {
                    return;
                };
                loop {
                    let Ok((guard, _)) = bg.wake.wait_timeout(stopped, REFRESH_EVERY) else {
                        return;
                    };
                    stopped = guard;
                    if *stopped {
                        return;
                    }
                    if let Err(e) = bg.refresh() {
                        tracing::warn!(error = %e, "could not refresh the repository lock");
                    }
                }
            })
            .map_err(|e| AgentError::io("start the lock refresher", e))?;
        let weak = Arc::downgrade(&inner);
        let on_terminate = crate::terminate::on_terminate(move || {
            if let Some(inner) = weak.upgrade() {
                remove_within(&inner, UNLOCK_ON_TERM);
            }
        });
        Ok(Self {
            inner,
            refresher: Some(refresher),
            _on_terminate: on_terminate,
        })
    }

    /// Makes the lock exclusive (for pruning); fails, keeping the lock as it was, while another
    /// process holds a live lock.
    pub fn upgrade(&self) -> Result<()> {
        if self
            .inner
            .current
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .is_some_and(|(_, ex)| ex)
        {
            return Ok(());
        }
        self.inner.take(true)
    }

    /// The id of our current lock file.
    pub fn id(&self) -> Option<String> {
        self.inner
            .current
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|(id, _)| id.clone()))
    }

    /// Removes the lock.
    pub fn release(mut self) -> Result<()> {
        self.stop_refresher();
        self.remove()
    }

    fn stop_refresher(&mut self) {
        if let Ok(mut s) = self.inner.stop.lock() {
            *s = true;
        }
        self.inner.wake.notify_all();
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
    }

    fn remove(&self) -> Result<()> {
        let current = self.inner.current.lock().ok().and_then(|mut c| c.take());
        if let Some((id, _)) = current {
            self.inner.store.remove("locks", &id)?;
            tracing::info!("repository unlocked");
        }
        Ok(())
    }
}

/// How long a run that did not release its lock (it failed) waits to remove it: a storage that
/// does not answer leaves the lock to the next run's stale-lock rule rather than hold back the
/// failure's report for minutes.
const UNLOCK_WITHIN: std::time::Duration = std::time::Duration::from_secs(20);

/// How long a terminated run waits to remove its lock: well within the pod's grace period.
const UNLOCK_ON_TERM: std::time::Duration = std::time::Duration::from_secs(10);

/// Removes our current lock file, waiting at most `within` for the storage.
fn remove_within(inner: &Arc<Inner>, within: Duration) {
    let Some((id, _)) = inner.current.lock().ok().and_then(|mut c| c.take()) else {
        return;
    };
    let inner = inner.clone();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let removing = std::thread::Builder::new()
        .name("unlock".into())
        .spawn(move || {
            let _ = tx.send(inner.store.remove("locks", &id));
        });
    match removing.map(|_| rx.recv_timeout(within)) {
        Ok(Ok(Ok(()))) => tracing::info!("repository unlocked"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "could not remove the repository lock"),
        _ => tracing::warn!(
            "the storage did not answer within {}s: the lock is left to the next run",
            within.as_secs()
        ),
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        self.stop_refresher();
        remove_within(&self.inner, UNLOCK_WITHIN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness() {
        let now = Utc::now();
        let host = hostname();
        let mut l = LockFile::ours(false);
        assert!(!l.is_stale(now, &host), "our own fresh lock");
        l.time = (now - chrono::Duration::minutes(31)).to_rfc3339();
        assert!(l.is_stale(now, &host), "older than 30 minutes");
        l.time = (now - chrono::Duration::minutes(5)).to_rfc3339();
        l.pid = i64::from(i32::MAX);
        assert!(l.is_stale(now, &host), "this host, no such process");
        l.hostname = "elsewhere".into();
        assert!(!l.is_stale(now, &host), "another host's fresh lock");
        // restic writes Go's RFC 3339 with nanoseconds and an offset.
        l.time = "2001-02-03T04:05:06.123456789+01:00".into();
        assert!(l.is_stale(now, &host));
    }

    #[test]
    fn locks_of_pods_that_no_longer_run() {
        let launched = Utc::now();
        let live = LivePods::new(
            launched,
            vec!["cairn-backup-nightly-1-abcde".into()],
            "cluster-a",
        );
        let mut l = LockFile::ours(false);
        l.time = (launched - chrono::Duration::minutes(2)).to_rfc3339();
        l.hostname = "cairn-backup-nightly-0-xyzab".into();
        l.username = "cairn@cluster-a".into();
        assert!(live.left_by_dead_pod(&l), "a session's pod not in the list");
        l.username = "cairn@cluster-b".into();
        assert!(
            !live.left_by_dead_pod(&l),
            "another cluster's pod: this one's list says nothing of it"
        );
        l.username = "root".into();
        assert!(!live.left_by_dead_pod(&l), "restic of a user");
        l.username = "cairn@cluster-a".into();
        assert!(
            !LivePods::default().left_by_dead_pod(&l),
            "no list: restic's rules"
        );
        l.hostname = "cairn-backup-nightly-1-abcde".into();
        assert!(!live.left_by_dead_pod(&l), "a live pod");
        l.hostname = "cairn-backup-nightly-1-ab".into();
        assert!(!live.left_by_dead_pod(&l), "a live pod's name cut to 63");
        l.hostname = "laptop".into();
        assert!(
            !live.left_by_dead_pod(&l),
            "not a session's pod (restic's own)"
        );
        l.hostname = "cairn-restore-r-12345".into();
        assert!(live.left_by_dead_pod(&l));
        l.time = (launched + chrono::Duration::seconds(1)).to_rfc3339();
        assert!(!live.left_by_dead_pod(&l), "written after the launch");
    }

    #[test]
    fn restic_json() {
        let text = r#"{"time":"2024-05-01T10:00:00.5+02:00","exclusive":true,"hostname":"h","username":"u","pid":42}"#;
        let l: LockFile = serde_json::from_str(text).unwrap();
        assert!(l.exclusive);
        assert_eq!(l.pid, 42);
        assert_eq!(l.uid, 0);
        assert_eq!(LockFile::parse(text.as_bytes()).unwrap(), l);
        // restic 0.14+ in a version 2 repository: compressed.
        let mut packed = vec![2u8];
        packed.extend(zstd::encode_all(text.as_bytes(), 3).unwrap());
        assert_eq!(LockFile::parse(&packed).unwrap(), l);
    }
}
