//! Entering a named network namespace on the current thread, and leaving it again.
//!
//! `setns` changes the namespace of the calling *thread* only, so the guard is `!Send`: it must
//! be dropped on the thread that created it, which restores the thread's original namespace.
//! Sockets and interfaces opened while inside stay bound to that namespace after leaving.

use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::path::Path;

/// While alive, the current thread is in another network namespace.
pub struct NetnsGuard {
    original: File,
    // `*const ()` is neither Send nor Sync: the guard cannot leave its thread.
    _not_send: PhantomData<*const ()>,
}

impl NetnsGuard {
    /// Enters the namespace `ip netns` knows as `name` (`/run/netns/NAME`).
    pub fn enter(name: &str) -> io::Result<NetnsGuard> {
        Self::enter_path(&Path::new("/run/netns").join(name))
    }

    pub fn enter_path(path: &Path) -> io::Result<NetnsGuard> {
        // thread-self, not self: setns is per thread, and /proc/self names the main thread.
        let original = File::open("/proc/thread-self/ns/net")?;
        let target = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        set_netns(&target)?;
        Ok(NetnsGuard {
            original,
            _not_send: PhantomData,
        })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = set_netns(&self.original) {
            // Carrying on in the wrong namespace would make later socket calls act on the wrong
            // interfaces; there is no safe way to continue this thread.
            panic!("cannot return to the original network namespace: {e}");
        }
    }
}

fn set_netns(ns: &File) -> io::Result<()> {
    // SAFETY: `ns` is an open file, so its descriptor is valid for the duration of the call;
    // CLONE_NEWNET makes the kernel check that it refers to a network namespace. setns only
    // changes this thread's namespace and touches no memory of ours.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
