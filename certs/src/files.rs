//! Write a serving certificate to a directory, laid out like a mounted `kubernetes.io/tls`
//! Secret: `ca.crt`, `tls.crt`, `tls.key`.
//!
//! Each file is written to a temporary name in the same directory and renamed into place, so a
//! server that reloads on change never reads half a file. The key is created 0600 from the
//! start (never briefly world-readable); the certificates are 0644.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::pki::ServingCert;
use crate::{Error, Result};

/// File names inside the directory.
pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// Write `serving` into `dir` (created if missing) and return the three paths
/// (ca.crt, tls.crt, tls.key). The key goes before the certificate: a watcher keyed on
/// `tls.crt` then finds its key already in place.
pub fn write_files(dir: &Path, serving: &ServingCert) -> Result<[PathBuf; 3]> {
    fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let ca = write_atomic(dir, CA_FILE, serving.ca_pem.as_bytes(), 0o644)?;
    let key = write_atomic(dir, KEY_FILE, serving.key_pem.as_bytes(), 0o600)?;
    let cert = write_atomic(dir, CERT_FILE, serving.cert_pem.as_bytes(), 0o644)?;
    Ok([ca, cert, key])
}

fn write_atomic(dir: &Path, name: &str, contents: &[u8], mode: u32) -> Result<PathBuf> {
    let target = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    // A temporary file left by a crash may carry other permissions: start afresh.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(format!("removing {}", tmp.display()))(e)),
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(&tmp)
        .map_err(io_err(format!("creating {}", tmp.display())))?;
    // The umask may have narrowed the mode; set exactly what we mean.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err(format!("setting the mode of {}", tmp.display())))?;
    }
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_err(format!("writing {}", tmp.display())))?;
    fs::rename(&tmp, &target).map_err(io_err(format!("renaming into {}", target.display())))?;
    Ok(target)
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}
