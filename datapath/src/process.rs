//! Process-wide settings the binary asks for at start-up.

/// Makes a write to a closed pipe end the process quietly, as it does for C programs, instead of
/// a panic in `println!` (`podwall matrix … | head` would otherwise print a backtrace). Rust
/// ignores SIGPIPE by default so that servers can handle EPIPE; podwall's output commands have
/// nothing better to do than stop.
pub fn exit_quietly_on_closed_pipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL installs no handler code; it is done at
    // start-up, before any thread exists that could be racing on signal state.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
