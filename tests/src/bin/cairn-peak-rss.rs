//! `cairn-peak-rss OUT PROGRAM [ARGS...]`: runs PROGRAM, writes its peak resident memory as the
//! kernel counted it (`wait4`'s `ru_maxrss`, in bytes) to the file OUT, and exits as PROGRAM did
//! (128 + the signal when one ended it).
//!
//! Why a process of its own: a child counts what its parent held when it forked (its peak at
//! exec, when started by vfork) in its own peak. A test process holds whatever its other tests
//! hold (hundreds of MiB of search answers); this launcher holds a few MiB, so the peak it
//! reports is PROGRAM's own.

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, program, rest @ ..] = args.as_slice() else {
        eprintln!("usage: cairn-peak-rss OUT PROGRAM [ARGS...]");
        return ExitCode::from(2);
    };
    let child = match Command::new(program).args(rest).spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("cairn-peak-rss: running {program}: {e}");
            return ExitCode::from(127);
        }
    };
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain data the kernel fills.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: reaps our own child into locals; `child` is never waited for again.
    while unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } != pid {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            eprintln!("cairn-peak-rss: wait4: {e}");
            return ExitCode::from(125);
        }
    }
    let peak = usage.ru_maxrss.max(0) as u64 * 1024;
    if let Err(e) = std::fs::write(out, peak.to_string()) {
        eprintln!("cairn-peak-rss: writing {out}: {e}");
        return ExitCode::from(125);
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    ExitCode::from(u8::try_from(code).unwrap_or(255))
}
