//! Network namespaces as RAII values, and the processes started inside them.
//!
//! A [`Namespace`] is created with a name no other process or test can pick
//! (`pw{pid}x{counter}{tag}`) and deleted when dropped, which also happens while a panicking
//! test unwinds. Processes started in it ([`Namespace::spawn`]) are killed by PID and reaped
//! when their [`ChildGuard`] drops, and at the latest when the namespace does.
//!
//! Everything goes through the `ip` command (`ip netns add/del`, `ip -n NS …`,
//! `ip netns exec NS …`), so this module needs no `unsafe` and never enters a namespace itself:
//! the calling thread stays where it is. It must not touch namespaces it did not create.

use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use crate::error::{Error, Result};

/// The `ip` binary. iproute2 installs it in /usr/sbin (Debian) or /sbin; a bare `ip` through
/// PATH is the last resort, because test runners do not always have sbin on PATH.
pub fn ip_binary() -> &'static OsStr {
    static IP: std::sync::OnceLock<OsString> = std::sync::OnceLock::new();
    IP.get_or_init(|| {
        ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
            .iter()
            .find(|p| std::path::Path::new(p).exists())
            .map(OsString::from)
            .unwrap_or_else(|| OsString::from("ip"))
    })
}

/// The environment variable that lets a machine without root skip network-namespace tests.
pub const SKIP_ENV: &str = "PODWALL_SKIP_NETNS";

/// The project's rule for tests that need root: returns `true` when the test should run.
///
/// Not root: with `PODWALL_SKIP_NETNS=1` it prints that the test is skipped and returns
/// `false` (the caller returns early); otherwise it panics, so that a CI without root fails
/// loudly instead of passing on tests that never ran.
///
/// ```no_run
/// if !harness::require_root_or_skip() {
///     return;
/// }
/// ```
pub fn require_root_or_skip() -> bool {
    let skip = std::env::var(SKIP_ENV).ok();
    match root_decision(effective_uid(), skip.as_deref()) {
        RootDecision::Run => true,
        RootDecision::Skip => {
            eprintln!("skipped: network-namespace tests need root ({SKIP_ENV}=1 is set)");
            false
        }
        RootDecision::Refuse => {
            panic!("network-namespace tests need root; set {SKIP_ENV}=1 to skip them")
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RootDecision {
    Run,
    Skip,
    Refuse,
}

/// The decision of [`require_root_or_skip`] without its inputs, so it is testable as non-root.
fn root_decision(euid: Option<u32>, skip_env: Option<&str>) -> RootDecision {
    match (euid, skip_env) {
        (Some(0), _) => RootDecision::Run,
        (_, Some("1")) => RootDecision::Skip,
        _ => RootDecision::Refuse,
    }
}

/// The effective UID, read from procfs: `geteuid` would be the only `unsafe` in the crate.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_effective_uid(&status)
}

fn parse_effective_uid(status: &str) -> Option<u32> {
    // "Uid:\t<real>\t<effective>\t<saved>\t<fs>"
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// `ip netns add` mounts /run/netns on first use; two concurrent first uses can race on that
/// mount, so creation and deletion are serialised within the process (they take milliseconds).
static NETNS_LOCK: Mutex<()> = Mutex::new(());
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop cleanup: the data behind these locks stays valid.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A unique name: the `pw` prefix the project reserves, this process's PID (unique among live
/// processes), a per-process counter, and a short readable tag.
fn unique_name(tag: &str) -> String {
    let tag: String = tag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(8)
        .collect();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("pw{}x{}{}", std::process::id(), n, tag)
}

/// The PID in a name [`unique_name`] made (`pw{pid}x…`), if `name` is one.
fn creator_pid(name: &str) -> Option<u32> {
    let (pid, _) = name.strip_prefix("pw")?.split_once('x')?;
    pid.parse().ok()
}

/// Deletes the namespaces of processes that died without deleting them (a SIGKILL runs no
/// destructor): names of [`unique_name`]'s form whose PID no process of this PID namespace has.
/// Returns the names deleted. A live process's namespaces, and names of other forms, are left
/// alone.
pub fn remove_orphans() -> Result<Vec<String>> {
    let own = std::process::id();
    let mut removed = Vec::new();
    for name in list()? {
        let Some(pid) = creator_pid(&name) else {
            continue;
        };
        if pid == own || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _guard = lock(&NETNS_LOCK);
        run_command(Command::new(ip_binary()).args(["netns", "del", &name]))?;
        removed.push(name);
    }
    Ok(removed)
}

/// [`remove_orphans`], once per process, before its first namespace: what a killed run left
/// behind goes with the next run.
fn remove_orphans_once() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| match remove_orphans() {
        Ok(removed) if !removed.is_empty() => eprintln!(
            "podwall-harness: deleted namespaces of processes that no longer run: {}",
            removed.join(", ")
        ),
        Ok(_) => {}
        Err(e) => eprintln!("podwall-harness: could not look for orphaned namespaces: {e}"),
    });
}

type Slot = Arc<Mutex<Option<Child>>>;

/// A network namespace this process created; deleted on drop.
#[derive(Debug)]
pub struct Namespace {
    name: String,
    /// Processes spawned in it, so dropping the namespace can kill those still running. Weak:
    /// a process whose guard was dropped is already gone.
    children: Mutex<Vec<Weak<Mutex<Option<Child>>>>>,
}

impl Namespace {
    /// Creates a namespace named `pw{pid}x{counter}{tag}` with `lo` up, IPv6 enabled and
    /// duplicate address detection off (addresses are usable at once, and tests are
    /// deterministic).
    pub fn create(tag: &str) -> Result<Namespace> {
        remove_orphans_once();
        let name = unique_name(tag);
        {
            let _guard = lock(&NETNS_LOCK);
            // Test runners that run each test in its own process (nextest) can still race on
            // the first mount of /run/netns; `ip` undoes a failed add, so trying again is safe.
            let mut attempt = 0;
            loop {
                match run_command(Command::new(ip_binary()).args(["netns", "add", &name])) {
                    Ok(_) => break,
                    Err(_) if attempt < 2 => {
                        attempt += 1;
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        // From here on, an error drops `ns`, which deletes it again.
        let ns = Namespace {
            name,
            children: Mutex::new(Vec::new()),
        };
        ns.set_sysctls(
            &[
                ("net.ipv6.conf.all.disable_ipv6", "0"),
                ("net.ipv6.conf.default.disable_ipv6", "0"),
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
            ],
            false,
        )?;
        ns.run(["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`: what a process or thread opens to `setns` into this namespace.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `ip -n NAME ARGS…`, which must succeed; returns its stdout.
    pub fn run<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_command(
            Command::new(ip_binary())
                .arg("-n")
                .arg(&self.name)
                .args(args),
        )
    }

    /// Runs `ip netns exec NAME ARGV…`, which must succeed; returns its stdout.
    pub fn exec<I, S>(&self, argv: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_command(&mut self.exec_command(argv))
    }

    /// Runs `ip netns exec NAME ARGV…` to completion and returns its output whatever its exit
    /// status (for programs whose exit code is the answer). Nothing bounds how long it runs:
    /// use [`Namespace::spawn`] for programs that might not end.
    pub fn output<I, S>(&self, argv: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.exec_command(argv);
        command.output().map_err(|source| Error::Spawn {
            command: render(&command),
            source,
        })
    }

    /// Starts `ARGV…` inside the namespace (`ip netns exec`, which `exec`s the program, so the
    /// PID is the program's own). Its stdin, stdout and stderr are pipes: take stdout and
    /// stderr from the guard and read them, or a chatty program blocks on a full pipe. Its stdin
    /// stays open until the guard drops, so a program that exits on end of input (like
    /// `pw-probe serve --exit-on-eof`) also ends when this whole process dies.
    pub fn spawn<I, S>(&self, argv: I) -> Result<ChildGuard>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.exec_command(argv);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let rendered = render(&command);
        let mut child = command.spawn().map_err(|source| Error::Spawn {
            command: rendered.clone(),
            source,
        })?;
        let pid = child.id();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let slot: Slot = Arc::new(Mutex::new(Some(child)));
        {
            let mut children = lock(&self.children);
            children.retain(|w| w.strong_count() > 0);
            children.push(Arc::downgrade(&slot));
        }
        Ok(ChildGuard {
            slot,
            pid,
            command: rendered,
            stdout,
            stderr,
        })
    }

    /// Writes sysctls inside the namespace (`/proc/sys/net` is per namespace, so it has to be a
    /// process in it that writes). With `missing_ok`, keys the kernel does not have are left
    /// out (say, `net.bridge.*` on a kernel without br_netfilter: nothing to turn off there).
    pub fn set_sysctls(&self, pairs: &[(&str, &str)], missing_ok: bool) -> Result<()> {
        // One shell for all pairs, arguments passed positionally so nothing needs quoting.
        let script = if missing_ok {
            r#"while [ $# -gt 0 ]; do if [ -e "$1" ]; then printf '%s\n' "$2" > "$1" || exit 1; fi; shift 2; done"#
        } else {
            r#"while [ $# -gt 0 ]; do printf '%s\n' "$2" > "$1" || exit 1; shift 2; done"#
        };
        let mut argv: Vec<String> = vec!["sh".into(), "-c".into(), script.into(), "sh".into()];
        for (key, value) in pairs {
            argv.push(format!("/proc/sys/{}", key.replace('.', "/")));
            argv.push((*value).to_string());
        }
        self.exec(argv).map(drop)
    }

    fn exec_command<I, S>(&self, argv: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(ip_binary());
        command.args(["netns", "exec"]).arg(&self.name).args(argv);
        command
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Processes first: a namespace with a process in it outlives `ip netns del`.
        let children = std::mem::take(&mut *lock(&self.children));
        for slot in children.iter().filter_map(Weak::upgrade) {
            stop(&slot);
        }
        let _guard = lock(&NETNS_LOCK);
        if let Err(e) = run_command(Command::new(ip_binary()).args(["netns", "del", &self.name])) {
            // Drop cannot fail; say so where a person will see it.
            eprintln!(
                "podwall-harness: could not delete namespace {}: {e}",
                self.name
            );
        }
    }
}

/// A process started inside a namespace; killed (SIGKILL, by its PID) and reaped on drop.
#[derive(Debug)]
pub struct ChildGuard {
    slot: Slot,
    pid: u32,
    command: String,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
}

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The command line it was started with (for messages).
    pub fn command(&self) -> &str {
        &self.command
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.stderr.take()
    }

    /// Its exit status if it has exited (reaping it), `None` while it runs.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        let mut slot = lock(&self.slot);
        match slot.as_mut() {
            // Killed by its namespace's drop.
            None => Ok(None),
            Some(child) => child.try_wait().map_err(|source| Error::Io {
                what: format!("waiting for `{}`", self.command),
                source,
            }),
        }
    }

    /// Waits for it to exit. Use only for a program that ends by itself (a probe with its own
    /// timeout): this blocks for as long as it runs.
    pub fn wait(&self) -> Result<Option<ExitStatus>> {
        let mut slot = lock(&self.slot);
        match slot.as_mut() {
            None => Ok(None),
            Some(child) => child.wait().map(Some).map_err(|source| Error::Io {
                what: format!("waiting for `{}`", self.command),
                source,
            }),
        }
    }

    /// Kills and reaps it now (also what drop does).
    pub fn kill(&self) {
        stop(&self.slot);
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        stop(&self.slot);
    }
}

/// Kills the child if it still runs and reaps it. `Child::kill` signals only a child that has
/// not been reaped, so a PID reused by an unrelated process is never signalled.
fn stop(slot: &Slot) {
    if let Some(mut child) = lock(slot).take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Runs a command that must succeed; the error names the command and carries its stderr.
pub(crate) fn run_command(command: &mut Command) -> Result<String> {
    let output = command.output().map_err(|source| Error::Spawn {
        command: render(command),
        source,
    })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: render(command),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// A command line as a person would type it, for error messages.
pub(crate) fn render(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `ip ARGS…` in the namespace this process is in (say, to move a device it made into
/// a namespace); must succeed; returns stdout.
pub fn run_ip<I, S>(args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_command(Command::new(ip_binary()).args(args))
}

/// Names of the namespaces in `ip netns list` (to check that nothing was left behind).
pub fn list() -> Result<Vec<String>> {
    let out = run_command(Command::new(ip_binary()).args(["netns", "list"]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Reads lines from a pipe on a thread, so the caller can wait on them with a deadline.
pub(crate) fn line_channel<R: io::Read + Send + 'static>(
    reader: R,
) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_runs_whatever_the_skip_variable_says() {
        assert_eq!(root_decision(Some(0), None), RootDecision::Run);
        assert_eq!(root_decision(Some(0), Some("1")), RootDecision::Run);
    }

    #[test]
    fn non_root_skips_only_when_the_variable_is_exactly_one() {
        assert_eq!(root_decision(Some(1000), Some("1")), RootDecision::Skip);
        assert_eq!(root_decision(Some(1000), Some("0")), RootDecision::Refuse);
        assert_eq!(root_decision(Some(1000), Some("yes")), RootDecision::Refuse);
        assert_eq!(root_decision(Some(1000), None), RootDecision::Refuse);
        assert_eq!(root_decision(None, None), RootDecision::Refuse);
    }

    #[test]
    fn effective_uid_is_the_second_field_of_the_uid_line() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t5\t5\t5\t5\n";
        assert_eq!(parse_effective_uid(status), Some(0));
        assert_eq!(parse_effective_uid("Name:\tx\n"), None);
    }

    #[test]
    fn the_creator_pid_is_read_only_from_names_of_this_module() {
        assert_eq!(creator_pid(&unique_name("sink")), Some(std::process::id()));
        assert_eq!(creator_pid("pw7210x2p"), Some(7210));
        for other in ["pw7210", "pwx2p", "pw12ax0", "pw3c", "calico7x1", "pw-1x0"] {
            assert_eq!(creator_pid(other), None, "{other}");
        }
    }

    #[test]
    fn names_carry_the_prefix_the_pid_and_a_cleaned_tag() {
        let a = unique_name("Node-1!");
        let b = unique_name("Node-1!");
        let prefix = format!("pw{}x", std::process::id());
        assert!(a.starts_with(&prefix), "{a}");
        assert!(a.ends_with("node1"), "{a}");
        assert_ne!(a, b);
    }
}
