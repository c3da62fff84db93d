//! The library side of `pw-probe`: start servers and run probes inside namespaces, and the
//! UDP generator and sink of throughput runs ([`flood`], [`Counter`]).
//!
//! Everything runs as a `pw-probe` child process in the namespace (`ip netns exec`), so the
//! calling thread never changes namespace. Servers die with their [`Server`] value, and with
//! this process: they run with `--exit-on-eof` on a stdin pipe only this process holds.
//!
//! # Finding the binary
//! [`binary`] looks, in order, at: the `PW_PROBE_BIN` environment variable; a path given to
//! [`set_binary`] (integration tests of this crate pass `env!("CARGO_BIN_EXE_pw-probe")`);
//! `pw-probe` next to the current executable (`target/<profile>/podwall` → `pw-probe` beside
//! it); and the directory above (`target/<profile>/deps/<test>` → `target/<profile>/pw-probe`).
//! `cargo test --workspace` and `cargo build --workspace` build it; a crate testing alone
//! (`cargo test -p podwall-netns-tests`) needs `cargo build -p podwall-harness --bin pw-probe`
//! first.

use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use policy::Protocol;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::netns::{line_channel, ChildGuard, Namespace};

/// How long a server may take to bind and print `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// Extra time a probe gets over its own timeout before it is killed as hung.
const GRACE: Duration = Duration::from_secs(5);

static BINARY: OnceLock<PathBuf> = OnceLock::new();

/// Tells the lookup where `pw-probe` is (first call wins). Integration tests of a crate that
/// owns the binary call `harness::probe::set_binary(env!("CARGO_BIN_EXE_pw-probe"))`.
pub fn set_binary(path: impl Into<PathBuf>) {
    let _ = BINARY.set(path.into());
}

/// The `pw-probe` binary, found as the module documentation describes.
pub fn binary() -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("PW_PROBE_BIN") {
        candidates.push(p.into());
    }
    if let Some(p) = BINARY.get() {
        candidates.push(p.clone());
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join("pw-probe"));
            if let Some(up) = dir.parent() {
                candidates.push(up.join("pw-probe"));
            }
        }
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| Error::ProbeBinaryNotFound {
            tried: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// What a [`Server`] listens on. The same port may appear under several protocols.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeSpec {
    pub tcp: Vec<u16>,
    pub udp: Vec<u16>,
    pub sctp: Vec<u16>,
    /// TCP ports that hash what they receive, for [`transfer`].
    pub sink: Vec<u16>,
    /// Addresses to bind (one socket each, so replies leave from the address asked); empty
    /// binds the wildcard addresses of both families.
    pub bind: Vec<IpAddr>,
}

impl ServeSpec {
    /// The same ports for TCP, UDP and SCTP.
    pub fn ports(ports: &[u16]) -> ServeSpec {
        ServeSpec {
            tcp: ports.to_vec(),
            udp: ports.to_vec(),
            sctp: ports.to_vec(),
            ..ServeSpec::default()
        }
    }

    pub fn with_sink(mut self, port: u16) -> ServeSpec {
        self.sink.push(port);
        self
    }

    pub fn bound_to(mut self, ips: &[IpAddr]) -> ServeSpec {
        self.bind = ips.to_vec();
        self
    }

    fn args(&self) -> Vec<String> {
        let list = |ports: &[u16]| {
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut args = vec!["serve".to_string(), "--exit-on-eof".to_string()];
        for (flag, ports) in [
            ("--tcp", &self.tcp),
            ("--udp", &self.udp),
            ("--sctp", &self.sctp),
            ("--sink", &self.sink),
        ] {
            if !ports.is_empty() {
                args.push(flag.to_string());
                args.push(list(ports));
            }
        }
        if !self.bind.is_empty() {
            args.push("--bind".to_string());
            args.push(
                self.bind
                    .iter()
                    .map(IpAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        args
    }
}

/// A running `pw-probe serve` in a namespace; killed when dropped.
#[derive(Debug)]
pub struct Server {
    child: ChildGuard,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts the server and returns once it has printed `ready` (every listener bound).
    pub fn start(ns: &Namespace, spec: &ServeSpec) -> Result<Server> {
        let bin = binary()?;
        let mut argv = vec![bin.into_os_string()];
        argv.extend(spec.args().into_iter().map(Into::into));
        let mut child = ns.spawn(argv)?;
        let stderr = collect(child.take_stderr());
        let lines = line_channel(child.take_stdout().expect("spawn pipes stdout"));
        await_ready(ns, &child, &stderr, &lines)?;
        Ok(Server { child, stderr })
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// What it has written to stderr so far (its complaints about failed sockets, if any).
    pub fn stderr(&self) -> String {
        read_collected(&self.stderr)
    }
}

/// Waits until a `pw-probe` command that binds first (`serve`, `count`) prints `ready`.
fn await_ready(
    ns: &Namespace,
    child: &ChildGuard,
    stderr: &Arc<Mutex<String>>,
    lines: &Receiver<String>,
) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let not_ready = |detail: String| Error::ProbeNotReady {
        namespace: ns.name().to_string(),
        detail,
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.trim() == "ready" => return Ok(()),
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => {
                return Err(not_ready(format!(
                    "no `ready` within {READY_TIMEOUT:?}; stderr: {}",
                    read_collected(stderr)
                )))
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = child.wait()?;
                // The stderr reader may still be draining the pipe.
                std::thread::sleep(Duration::from_millis(20));
                return Err(not_ready(format!(
                    "it exited ({}): {}",
                    status.map_or("killed".to_string(), |s| s.to_string()),
                    read_collected(stderr)
                )));
            }
        }
    }
}

/// The result line of a `pw-probe connect`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProbeOutcome {
    pub ok: bool,
    /// What happened, e.g. "connected, echo ok", "connect: Connection refused (os error 111)".
    pub detail: String,
    pub elapsed_ms: u64,
}

/// One connection attempt, as [`probe_with`] takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub protocol: Protocol,
    pub from: Option<IpAddr>,
    pub to: IpAddr,
    /// The destination port; for ICMP and ICMPv6 the type and code as the classifier sees them
    /// ([`policy::calico::rule::icmp_port`]).
    pub port: u16,
    /// The source port (`None`: the kernel picks an ephemeral one).
    pub source_port: Option<u16>,
    pub timeout: Duration,
}

/// Whether `pw-probe` can send a `protocol` probe to `port` (see [`Probe::port`]): TCP, UDP and
/// SCTP to any port, ICMP and ICMPv6 echo requests with any code. Other ICMP types are not
/// answered by a kernel in a way that shows they got through; `podwall test` checks them.
pub fn sendable(protocol: Protocol, port: u16) -> std::result::Result<(), String> {
    let echo = match protocol {
        Protocol::TCP | Protocol::UDP | Protocol::SCTP => return Ok(()),
        Protocol::ICMP => crate::icmp::ECHO_REQUEST_V4,
        Protocol::ICMPV6 => crate::icmp::ECHO_REQUEST_V6,
        other => {
            return Err(format!(
                "{other} has no probe (TCP, UDP, SCTP and ICMP/ICMPv6 echo requests do)"
            ))
        }
    };
    let icmp_type = (port >> 8) as u8;
    if icmp_type != echo {
        return Err(format!(
            "{protocol} type {icmp_type}: the lab sends echo requests (type {echo}) only; other types are checked offline with `podwall test`"
        ));
    }
    Ok(())
}

/// Whether a `protocol` connection from namespace `ns` to `to:port` works (TCP: handshake and a
/// short echo; UDP: a datagram echoed; SCTP: INIT answered by INIT-ACK; ICMP: an echo request
/// answered), from an ephemeral source port. `Ok(false)` is a verdict (refused, unreachable,
/// timed out); `Err` means the probe could not be tried.
pub fn probe(
    ns: &Namespace,
    protocol: Protocol,
    to: IpAddr,
    port: u16,
    timeout: Duration,
) -> Result<bool> {
    probe_with(
        ns,
        &Probe {
            protocol,
            from: None,
            to,
            port,
            source_port: None,
            timeout,
        },
    )
    .map(|o| o.ok)
}

/// [`probe`] with a source address, returning what happened.
pub fn probe_with(ns: &Namespace, probe: &Probe) -> Result<ProbeOutcome> {
    sendable(probe.protocol, probe.port).map_err(|detail| Error::Probe {
        namespace: ns.name().to_string(),
        command: "connect".into(),
        detail,
    })?;
    let mut args = vec![
        "connect".to_string(),
        "--protocol".into(),
        probe.protocol.to_string(),
        "--to".into(),
        probe.to.to_string(),
        "--timeout-ms".into(),
        probe.timeout.as_millis().max(1).to_string(),
    ];
    if probe.protocol.is_icmp() {
        args.extend(["--icmp-code".into(), (probe.port & 0xff).to_string()]);
    } else {
        args.extend(["--port".into(), probe.port.to_string()]);
    }
    if let Some(source_port) = probe.source_port {
        args.extend(["--source-port".into(), source_port.to_string()]);
    }
    if let Some(from) = probe.from {
        args.extend(["--from".into(), from.to_string()]);
    }
    run_to_result(ns, "connect", args, probe.timeout)
}

/// The result line of a `pw-probe transfer`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TransferOutcome {
    /// The far end received exactly the bytes sent (count and SHA-256 match).
    pub ok: bool,
    pub detail: String,
    pub bytes: u64,
    pub sha256: String,
    pub far_sha256: Option<String>,
    pub elapsed_ms: u64,
    pub mbit_per_s: f64,
}

/// Sends `bytes` pseudo-random bytes over TCP from `ns` to a sink (`ServeSpec::sink`) at
/// `to:port`, which answers with their SHA-256; `ok` when it matches what was sent.
pub fn transfer(
    ns: &Namespace,
    to: IpAddr,
    port: u16,
    bytes: u64,
    timeout: Duration,
) -> Result<TransferOutcome> {
    let args = vec![
        "transfer".to_string(),
        "--to".into(),
        to.to_string(),
        "--port".into(),
        port.to_string(),
        "--bytes".into(),
        bytes.to_string(),
        "--timeout-ms".into(),
        timeout.as_millis().max(1).to_string(),
    ];
    run_to_result(ns, "transfer", args, timeout)
}

/// How an interface's counters moved during a [`flood`] (`tx_*`) or a [`Counter`] window
/// (`rx_*`), read from `/sys/class/net/IF/statistics` inside the namespace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InterfaceDelta {
    pub name: String,
    pub packets: u64,
    pub dropped: u64,
}

/// What a `pw-probe flood` sends: UDP datagrams to `to:port`, as fast as one thread can, for
/// `duration`, from `flows` sockets (source ports) in turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloodSpec {
    pub to: IpAddr,
    pub port: u16,
    pub duration: Duration,
    /// Bytes of the Ethernet frame each datagram makes (payload = size − 42 over IPv4, − 62
    /// over IPv6); on TUN the packet is 14 bytes shorter.
    pub size: u16,
    pub flows: u16,
    /// An interface whose `tx_packets`/`tx_dropped` to report (the pod's `eth0`).
    pub interface: Option<String>,
}

impl FloodSpec {
    /// 64-byte frames, one flow, counters of `eth0`.
    pub fn new(to: IpAddr, port: u16, duration: Duration) -> FloodSpec {
        FloodSpec {
            to,
            port,
            duration,
            size: 64,
            flows: 1,
            interface: Some(crate::topology::POD_INTERFACE.to_string()),
        }
    }

    pub fn with_flows(mut self, flows: u16) -> FloodSpec {
        self.flows = flows;
        self
    }

    pub fn with_size(mut self, size: u16) -> FloodSpec {
        self.size = size;
        self
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "flood".to_string(),
            "--to".into(),
            self.to.to_string(),
            "--port".into(),
            self.port.to_string(),
            "--seconds".into(),
            seconds_arg(self.duration),
            "--size".into(),
            self.size.to_string(),
            "--flows".into(),
            self.flows.to_string(),
        ];
        if let Some(interface) = &self.interface {
            args.extend(["--interface".into(), interface.clone()]);
        }
        args
    }
}

/// The result line of a `pw-probe flood`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FloodOutcome {
    /// Datagrams the sender's kernel accepted.
    pub sent: u64,
    /// Sends that failed (ENOBUFS, ECONNREFUSED after an ICMP error, …).
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    pub pps: f64,
    pub interface: Option<InterfaceDelta>,
}

/// Runs `pw-probe flood` in `ns` to its end (`spec.duration`).
pub fn flood(ns: &Namespace, spec: &FloodSpec) -> Result<FloodOutcome> {
    run_to_result(ns, "flood", spec.args(), spec.duration)
}

/// What a [`Counter`] counts: datagrams to UDP `port`, for `duration` from the first one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountSpec {
    pub port: u16,
    pub duration: Duration,
    /// How long to wait for the first datagram.
    pub wait: Duration,
    /// Address to bind; `None` binds `::` for both families.
    pub bind: Option<IpAddr>,
    /// An interface whose `rx_packets`/`rx_dropped` over the window to report (`eth0`).
    pub interface: Option<String>,
}

impl CountSpec {
    /// Waits up to 10 s for the first datagram; counters of `eth0`.
    pub fn new(port: u16, duration: Duration) -> CountSpec {
        CountSpec {
            port,
            duration,
            wait: Duration::from_secs(10),
            bind: None,
            interface: Some(crate::topology::POD_INTERFACE.to_string()),
        }
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "count".to_string(),
            "--udp".into(),
            self.port.to_string(),
            "--seconds".into(),
            seconds_arg(self.duration),
            "--wait-ms".into(),
            self.wait.as_millis().max(1).to_string(),
        ];
        if let Some(bind) = self.bind {
            args.extend(["--bind".into(), bind.to_string()]);
        }
        if let Some(interface) = &self.interface {
            args.extend(["--interface".into(), interface.clone()]);
        }
        args
    }
}

/// The result line of a `pw-probe count`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CountOutcome {
    /// Datagrams read from the socket in the window (0: none arrived within `wait`).
    pub received: u64,
    /// The window, from the first datagram on.
    pub seconds: f64,
    /// `received / seconds`.
    pub pps: f64,
    /// Datagrams that reached the socket but found its buffer full (`Udp: RcvbufErrors`).
    pub rcvbuf_errors: Option<u64>,
    pub interface: Option<InterfaceDelta>,
    pub detail: String,
}

/// A running `pw-probe count`, bound and waiting for its first datagram; killed when dropped.
#[derive(Debug)]
pub struct Counter {
    child: ChildGuard,
    stderr: Arc<Mutex<String>>,
    lines: Receiver<String>,
    namespace: String,
    spec: CountSpec,
}

impl Counter {
    /// Starts counting in `ns`; returns once the socket is bound (`ready`).
    pub fn start(ns: &Namespace, spec: &CountSpec) -> Result<Counter> {
        let bin = binary()?;
        let mut argv = vec![bin.into_os_string()];
        argv.extend(spec.args().into_iter().map(Into::into));
        let mut child = ns.spawn(argv)?;
        let stderr = collect(child.take_stderr());
        let lines = line_channel(child.take_stdout().expect("spawn pipes stdout"));
        await_ready(ns, &child, &stderr, &lines)?;
        Ok(Counter {
            child,
            stderr,
            lines,
            namespace: ns.name().to_string(),
            spec: spec.clone(),
        })
    }

    /// Waits for the result (at most `wait + duration` and a grace period after this call).
    pub fn finish(self) -> Result<CountOutcome> {
        let failed = |detail: String| Error::Probe {
            namespace: self.namespace.clone(),
            command: "count".into(),
            detail,
        };
        let line = match self
            .lines
            .recv_timeout(self.spec.wait + self.spec.duration + GRACE)
        {
            Ok(line) => line,
            Err(_) => {
                self.child.kill();
                std::thread::sleep(Duration::from_millis(20));
                return Err(failed(format!(
                    "no result; stderr: {}",
                    read_collected(&self.stderr).trim()
                )));
            }
        };
        let status = self.child.wait()?;
        let code = status.and_then(|s| s.code());
        match (code, serde_json::from_str::<CountOutcome>(line.trim())) {
            (Some(0 | 1), Ok(outcome)) => Ok(outcome),
            (_, parsed) => {
                std::thread::sleep(Duration::from_millis(20));
                Err(failed(format!(
                    "exit {}; stdout: {}; stderr: {}{}",
                    code.map_or("by signal".to_string(), |c| c.to_string()),
                    line.trim(),
                    read_collected(&self.stderr).trim(),
                    parsed
                        .err()
                        .map(|e| format!("; unreadable result: {e}"))
                        .unwrap_or_default(),
                )))
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// Seconds as `pw-probe` reads them, to the millisecond.
fn seconds_arg(duration: Duration) -> String {
    format!("{:.3}", duration.as_secs_f64())
}

/// Runs a `pw-probe` command that prints one JSON line and exits 0 (worked) or 1 (did not);
/// anything else is an error carrying its output. A probe still running `GRACE` after its own
/// timeout is killed.
fn run_to_result<T: for<'de> Deserialize<'de>>(
    ns: &Namespace,
    command: &str,
    args: Vec<String>,
    timeout: Duration,
) -> Result<T> {
    let bin = binary()?;
    let mut argv = vec![bin.into_os_string()];
    argv.extend(args.into_iter().map(Into::into));
    let mut child = ns.spawn(argv)?;
    let stderr = collect(child.take_stderr());
    let stdout = collect_done(child.take_stdout());
    let failed = |detail: String| Error::Probe {
        namespace: ns.name().to_string(),
        command: command.to_string(),
        detail,
    };
    let out = match stdout.recv_timeout(timeout + GRACE) {
        Ok(out) => out,
        Err(_) => {
            child.kill();
            return Err(failed(format!(
                "still running {:?} after its timeout; killed",
                GRACE
            )));
        }
    };
    // Its stdout is closed, so it has exited or is about to.
    let status = child.wait()?;
    let code = status.and_then(|s| s.code());
    let parsed = serde_json::from_str::<T>(out.trim());
    match (code, parsed) {
        (Some(0 | 1), Ok(result)) => Ok(result),
        (_, parsed) => {
            std::thread::sleep(Duration::from_millis(20));
            Err(failed(format!(
                "exit {}; stdout: {}; stderr: {}{}",
                code.map_or("by signal".to_string(), |c| c.to_string()),
                out.trim(),
                read_collected(&stderr).trim(),
                parsed
                    .err()
                    .map(|e| format!("; unreadable result: {e}"))
                    .unwrap_or_default(),
            )))
        }
    }
}

/// Reads a pipe to its end on a thread, into a buffer readable while it fills.
fn collect<R: Read + Send + 'static>(pipe: Option<R>) -> Arc<Mutex<String>> {
    let buffer = Arc::new(Mutex::new(String::new()));
    if let Some(mut pipe) = pipe {
        let sink = Arc::clone(&buffer);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&chunk[..n]);
                sink.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push_str(&text);
            }
        });
    }
    buffer
}

fn read_collected(buffer: &Arc<Mutex<String>>) -> String {
    buffer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Reads a pipe to its end on a thread and delivers the whole text once, so the caller can wait
/// for it with a deadline.
fn collect_done<R: Read + Send + 'static>(pipe: Option<R>) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        let _ = tx.send(text);
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_spec_becomes_the_command_line_pw_probe_expects() {
        let spec = ServeSpec::ports(&[80, 81])
            .with_sink(9000)
            .bound_to(&["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()]);
        assert_eq!(
            spec.args().join(" "),
            "serve --exit-on-eof --tcp 80,81 --udp 80,81 --sctp 80,81 --sink 9000 \
             --bind 10.0.0.1,fd00::1"
        );
    }

    #[test]
    fn an_empty_list_is_left_out() {
        let spec = ServeSpec {
            udp: vec![53],
            ..ServeSpec::default()
        };
        assert_eq!(spec.args().join(" "), "serve --exit-on-eof --udp 53");
    }

    #[test]
    fn flood_and_count_specs_become_their_command_lines() {
        let flood = FloodSpec::new("10.0.0.2".parse().unwrap(), 9999, Duration::from_secs(5))
            .with_flows(100);
        assert_eq!(
            flood.args().join(" "),
            "flood --to 10.0.0.2 --port 9999 --seconds 5.000 --size 64 --flows 100 \
             --interface eth0"
        );
        let count = CountSpec {
            interface: None,
            ..CountSpec::new(9999, Duration::from_millis(2500))
        };
        assert_eq!(
            count.args().join(" "),
            "count --udp 9999 --seconds 2.500 --wait-ms 10000"
        );
    }

    #[test]
    fn flood_and_count_result_lines_parse() {
        let line = r#"{"command":"flood","to":"10.0.0.2","port":9999,"size":64,"flows":1,"sent":10,"errors":0,"first_error":null,"seconds":1.0,"pps":10.0,"interface":{"name":"eth0","packets":10,"dropped":0}}"#;
        let outcome: FloodOutcome = serde_json::from_str(line).unwrap();
        assert_eq!(outcome.sent, 10);
        assert_eq!(outcome.interface.unwrap().packets, 10);
        let line = r#"{"command":"count","udp":9999,"received":0,"seconds":0.0,"pps":0.0,"rcvbuf_errors":null,"interface":null,"detail":"no datagram within 10 ms"}"#;
        let outcome: CountOutcome = serde_json::from_str(line).unwrap();
        assert_eq!(outcome.received, 0);
    }

    #[test]
    fn a_probe_result_line_parses() {
        let line = r#"{"command":"connect","protocol":"TCP","from":null,"to":"10.0.0.1","port":80,"ok":false,"detail":"timed out","elapsed_ms":1001}"#;
        let outcome: ProbeOutcome = serde_json::from_str(line).unwrap();
        assert!(!outcome.ok);
        assert_eq!(outcome.elapsed_ms, 1001);
    }
}
