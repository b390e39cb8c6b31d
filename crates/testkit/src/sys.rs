//! The few system calls the harness needs.

use std::ffi::CString;
use std::process::Command;
use std::sync::Mutex;

/// A user's uid and gid, if the user exists.
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let c = CString::new(name).ok()?;
    // SAFETY: getpwnam takes a valid NUL-terminated string and returns null or a pointer to a
    // static passwd record, read at once before any other call could overwrite it.
    unsafe {
        let pw = libc::getpwnam(c.as_ptr());
        if pw.is_null() {
            None
        } else {
            Some(((*pw).pw_uid, (*pw).pw_gid))
        }
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Makes the child get `signal` when the thread that spawned it exits (a backstop: a crashed
/// test run does not leave servers behind).
pub fn die_with_parent(cmd: &mut Command, signal: libc::c_int) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

type Hook = Box<dyn FnOnce() + Send>;
static AT_EXIT: Mutex<Vec<Hook>> = Mutex::new(Vec::new());

extern "C" fn run_exit_hooks() {
    let hooks = std::mem::take(&mut *AT_EXIT.lock().unwrap_or_else(|p| p.into_inner()));
    for hook in hooks.into_iter().rev() {
        hook();
    }
}

/// Runs `hook` when the process exits normally (the test harness returns or calls `exit`).
pub fn at_exit(hook: impl FnOnce() + Send + 'static) {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: registering a plain extern "C" function with no captured state.
        unsafe {
            libc::atexit(run_exit_hooks);
        }
    });
    AT_EXIT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Box::new(hook));
}

/// Runs `f` on one long-lived thread, so that children it spawns with [`die_with_parent`] are
/// not signalled when a short-lived test thread ends.
pub fn on_spawner_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::sync::mpsc;
    type Job = Box<dyn FnOnce() + Send>;
    static SPAWNER: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);
    let (tx, rx) = mpsc::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    {
        let mut guard = SPAWNER.lock().unwrap_or_else(|p| p.into_inner());
        let sender = guard.get_or_insert_with(|| {
            let (jtx, jrx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("testkit-spawner".into())
                .spawn(move || {
                    for job in jrx {
                        job();
                    }
                    // Keep the thread (the children's parent) alive until the process exits.
                    loop {
                        std::thread::park();
                    }
                })
                .expect("spawn the testkit spawner thread");
            jtx
        });
        sender.send(job).expect("spawner thread alive");
    }
    rx.recv().expect("spawner job finished")
}
