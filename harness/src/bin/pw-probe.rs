//! `pw-probe`: the probe agent the harness runs inside network namespaces.
//!
//! - `serve`: TCP echo, UDP echo, SCTP (INIT answered by INIT-ACK, over raw sockets because the
//!   kernel has no SCTP module) and a TCP sink that answers with the SHA-256 of what it got.
//!   Prints `ready` once every listener is bound.
//! - `connect`: one probe (TCP, UDP, SCTP, or an ICMP/ICMPv6 echo request over a raw socket);
//!   exit 0 when the connection works, 1 when it does not (refused,
//!   unreachable, timed out), 2 on usage or local errors (bad arguments, an address that is not
//!   local). Prints one JSON line.
//! - `transfer`: sends pseudo-random bytes to a sink and checks the far end's SHA-256.
//! - `flood`: sends UDP datagrams as fast as one thread can for a while (a packet generator for
//!   throughput runs; a `send` per datagram, no batching).
//! - `count`: counts the UDP datagrams arriving on a port for a while (the sink for `flood`).
//!
//! It talks only to the addresses it is given and binds only where it is told.
#![forbid(unsafe_code)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket,
};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use harness::sctp;
use serde::Serialize;
use sha2::{Digest, Sha256};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Probe agent for podwall's network-namespace tests.
#[derive(Parser)]
#[command(name = "pw-probe", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve TCP/UDP echo, SCTP INIT-ACK and a TCP hash sink; prints `ready` once bound.
    ///
    /// Example: pw-probe serve --tcp 80,81 --udp 80 --sctp 80 --sink 9000
    Serve(ServeArgs),
    /// Try one connection; exit 0 if it works, 1 if not, 2 on usage or local errors.
    ///
    /// Example: pw-probe connect --protocol TCP --to 10.244.1.10 --port 80 --timeout-ms 1000
    ///          pw-probe connect --protocol ICMP --to 10.244.1.10 --icmp-code 0
    Connect(ConnectArgs),
    /// Send pseudo-random bytes to a `serve --sink` port and check the SHA-256 it answers.
    ///
    /// Example: pw-probe transfer --to 10.244.1.10 --port 9000 --bytes 8000000
    Transfer(TransferArgs),
    /// Send UDP datagrams as fast as possible for a while; prints one JSON line.
    ///
    /// Example: pw-probe flood --to 10.244.1.10 --port 9999 --seconds 5 --size 64 --flows 100
    Flood(FloodArgs),
    /// Count UDP datagrams arriving on a port: prints `ready` once bound, then, SECONDS after
    /// the first datagram, one JSON line. Exit 1 if none arrives within --wait-ms.
    ///
    /// Example: pw-probe count --udp 9999 --seconds 5
    Count(CountArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TCP ports to echo on.
    #[arg(long, value_delimiter = ',')]
    tcp: Vec<u16>,
    /// UDP ports to echo on.
    #[arg(long, value_delimiter = ',')]
    udp: Vec<u16>,
    /// SCTP ports to answer INITs on (with an INIT-ACK).
    #[arg(long, value_delimiter = ',')]
    sctp: Vec<u16>,
    /// TCP ports that read to end of stream and answer `<sha256 hex> <bytes>`.
    #[arg(long, value_delimiter = ',')]
    sink: Vec<u16>,
    /// Bind to these addresses only (one socket each, so replies leave from the address the
    /// request went to).
    #[arg(long, value_delimiter = ',', conflicts_with = "bind_all")]
    bind: Vec<IpAddr>,
    /// Bind to the wildcard addresses 0.0.0.0 and :: (the default without --bind).
    #[arg(long)]
    bind_all: bool,
    /// Exit when standard input reaches end of file (the harness holds it open, so the server
    /// dies with the process that started it).
    #[arg(long)]
    exit_on_eof: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum, Serialize)]
#[value(rename_all = "UPPER")]
#[serde(rename_all = "UPPERCASE")]
enum Proto {
    Tcp,
    Udp,
    Sctp,
    /// An ICMP echo request (IPv4), answered by the target's kernel.
    Icmp,
    /// An ICMPv6 echo request.
    Icmpv6,
}

#[derive(clap::Args)]
struct ConnectArgs {
    #[arg(long, ignore_case = true)]
    protocol: Proto,
    #[arg(long)]
    to: IpAddr,
    /// The destination port (TCP, UDP and SCTP).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Source port (TCP, UDP and SCTP; the kernel picks an ephemeral one without it). A TCP
    /// probe from a fixed port ends with a reset, so that no TIME_WAIT blocks the next one.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    source_port: Option<u16>,
    /// The code of an ICMP or ICMPv6 echo request.
    #[arg(long, default_value_t = 0)]
    icmp_code: u8,
    /// Source address (must be local); the kernel picks one without it.
    #[arg(long)]
    from: Option<IpAddr>,
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
}

#[derive(clap::Args)]
struct TransferArgs {
    #[arg(long)]
    to: IpAddr,
    #[arg(long)]
    port: u16,
    #[arg(long)]
    from: Option<IpAddr>,
    #[arg(long, default_value_t = 8_000_000)]
    bytes: u64,
    /// For the whole transfer, connection included.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(s),
        Ok(_) => Err("must be a number of seconds above 0 (at most 86400)".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(clap::Args)]
struct FloodArgs {
    #[arg(long)]
    to: IpAddr,
    #[arg(long)]
    port: u16,
    /// How long to send.
    #[arg(long, value_parser = positive_seconds)]
    seconds: f64,
    /// Bytes of the Ethernet frame each datagram makes (14 + IP header + 8 + payload, no FCS):
    /// the payload is SIZE - 42 bytes over IPv4 and SIZE - 62 over IPv6 (never below 0). On a
    /// TUN device there is no Ethernet header, so the packet is 14 bytes shorter.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(..=9000))]
    size: u16,
    /// Distinct flows (source ports), one socket each, sent to in turn.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=4096))]
    flows: u16,
    /// Source address (must be local); the kernel picks one without it.
    #[arg(long)]
    from: Option<IpAddr>,
    /// Report this interface's tx_packets and tx_dropped over the run (say, eth0).
    #[arg(long)]
    interface: Option<String>,
}

#[derive(clap::Args)]
struct CountArgs {
    /// The UDP port to count on.
    #[arg(long)]
    udp: u16,
    /// How long to count, from the first datagram on.
    #[arg(long, value_parser = positive_seconds)]
    seconds: f64,
    /// Address to bind; without it, `::` for both families (or `0.0.0.0` when IPv6 is off).
    #[arg(long)]
    bind: Option<IpAddr>,
    /// How long to wait for the first datagram.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    wait_ms: u64,
    /// Report this interface's rx_packets and rx_dropped over the counting window (say, eth0).
    #[arg(long)]
    interface: Option<String>,
}

const EXIT_OK: u8 = 0;
const EXIT_BLOCKED: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse(); // clap exits with 2 on usage errors
    match cli.command {
        Command::Serve(args) => match serve(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pw-probe serve: {e}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Connect(args) => connect(&args),
        Command::Transfer(args) => transfer(&args),
        Command::Flood(args) => flood(&args),
        Command::Count(args) => count(&args),
    }
}

// ---------------------------------------------------------------------------------------------
// serve

fn serve(args: ServeArgs) -> io::Result<()> {
    if args.tcp.is_empty() && args.udp.is_empty() && args.sctp.is_empty() && args.sink.is_empty() {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "nothing to serve: give --tcp, --udp, --sctp or --sink",
        ));
    }
    let addresses = if args.bind.is_empty() {
        vec![
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ]
    } else {
        args.bind.clone()
    };
    // Bind everything before reporting ready; a failure here is reported and exits.
    for &ip in &addresses {
        for &port in &args.tcp {
            let listener = tcp_listener(SocketAddr::new(ip, port))?;
            thread::spawn(move || accept_loop(listener, echo_stream));
        }
        for &port in &args.sink {
            let listener = tcp_listener(SocketAddr::new(ip, port))?;
            thread::spawn(move || accept_loop(listener, sink_stream));
        }
        for &port in &args.udp {
            let socket = udp_socket(SocketAddr::new(ip, port))?;
            thread::spawn(move || udp_echo(socket));
        }
        if !args.sctp.is_empty() {
            let socket = raw_sctp_socket(ip, Some(ip).filter(|ip| !ip.is_unspecified()))?;
            let ports: Arc<[u16]> = args.sctp.clone().into();
            thread::spawn(move || sctp_answer(socket, ip, &ports));
        }
    }
    if args.exit_on_eof {
        thread::spawn(|| {
            let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
            std::process::exit(0);
        });
    }
    let mut out = io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    drop(out);
    loop {
        thread::park();
    }
}

fn new_socket(ip: IpAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(SocketAddr::new(ip, 0)),
        ty,
        Some(protocol),
    )?;
    if ip.is_ipv6() {
        // So that [::] and 0.0.0.0 can both be bound on the same port.
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

fn with_addr(e: io::Error, what: &str, addr: SocketAddr) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {addr}: {e}"))
}

fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = new_socket(addr.ip(), Type::STREAM, Protocol::TCP)?;
    socket.set_reuse_address(true)?;
    socket
        .bind(&addr.into())
        .map_err(|e| with_addr(e, "binding TCP", addr))?;
    socket.listen(128)?;
    Ok(socket.into())
}

fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = new_socket(addr.ip(), Type::DGRAM, Protocol::UDP)?;
    socket
        .bind(&addr.into())
        .map_err(|e| with_addr(e, "binding UDP", addr))?;
    Ok(socket.into())
}

/// A raw socket for SCTP (protocol 132) of `family`'s address family, bound to `bind` if given
/// (a bound raw socket sees only packets to that address and sends from it). It is handed back
/// as a `UdpSocket` only for its safe datagram calls (`send_to`, `recv_from` into `&mut [u8]`);
/// nothing UDP-specific is done with it.
fn raw_sctp_socket(family: IpAddr, bind: Option<IpAddr>) -> io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(SocketAddr::new(family, 0)),
        Type::RAW,
        Some(Protocol::from(sctp::PROTOCOL)),
    )?;
    if let Some(ip) = bind {
        let addr = SocketAddr::new(ip, 0);
        socket
            .bind(&SockAddr::from(addr))
            .map_err(|e| with_addr(e, "binding raw SCTP", addr))?;
    }
    Ok(socket.into())
}

fn accept_loop(listener: TcpListener, handle: fn(TcpStream)) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                thread::spawn(move || handle(stream));
            }
            Err(e) => eprintln!("pw-probe serve: accept: {e}"),
        }
    }
}

fn echo_stream(stream: TcpStream) {
    let Ok(mut reader) = stream.try_clone() else {
        return;
    };
    let mut writer = stream;
    let _ = io::copy(&mut reader, &mut writer);
}

fn sink_stream(mut stream: TcpStream) {
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
    let _ = writeln!(stream, "{} {total}", hex(&hasher.finalize()));
}

fn udp_echo(socket: UdpSocket) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                let _ = socket.send_to(&buf[..n], peer);
            }
            Err(e) => eprintln!("pw-probe serve: udp: {e}"),
        }
    }
}

/// Answers INITs to one of `ports` with an INIT-ACK. Raw sockets see every SCTP packet of the
/// namespace, so anything else (other ports, other chunks) is left alone: another server in the
/// same namespace may be the one to answer it.
fn sctp_answer(socket: UdpSocket, family: IpAddr, ports: &[u16]) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("pw-probe serve: sctp: {e}");
                continue;
            }
        };
        let payload = if family.is_ipv4() {
            match sctp::split_ipv4(&buf[..n]) {
                Some((_, _, payload)) => payload,
                None => continue,
            }
        } else {
            &buf[..n]
        };
        let Some(packet) = sctp::parse(payload) else {
            continue;
        };
        if !packet.checksum_ok
            || packet.chunk_type != sctp::CHUNK_INIT
            || packet.verification_tag != 0
            || !ports.contains(&packet.dst_port)
        {
            continue;
        }
        let Some(peer_tag) = packet.initiate_tag().filter(|&t| t != 0) else {
            continue;
        };
        let reply = sctp::init_ack(
            packet.dst_port,
            packet.src_port,
            peer_tag,
            nonzero_random_u32(),
            random_u64() as u32,
            b"pw-probe",
        );
        // The port of a raw socket's address is ignored (IPv4) or must be 0 (IPv6).
        let _ = socket.send_to(&reply, SocketAddr::new(peer.ip(), 0));
    }
}

// ---------------------------------------------------------------------------------------------
// connect

#[derive(Serialize)]
struct ConnectReport {
    command: &'static str,
    protocol: Proto,
    from: Option<IpAddr>,
    to: IpAddr,
    port: u16,
    ok: bool,
    detail: String,
    elapsed_ms: u64,
}

/// How a probe ended: it worked, it did not (a verdict), or it could not be tried at all.
enum Outcome {
    Connected(String),
    Blocked(String),
    LocalError(String),
}

fn connect(args: &ConnectArgs) -> ExitCode {
    let start = Instant::now();
    let deadline = start + Duration::from_millis(args.timeout_ms);
    let ported = matches!(args.protocol, Proto::Tcp | Proto::Udp | Proto::Sctp);
    let outcome = if args.from.is_some_and(|f| f.is_ipv4() != args.to.is_ipv4()) {
        Outcome::LocalError("--from and --to are of different address families".into())
    } else if ported && args.port == 0 {
        Outcome::LocalError("--port: TCP, UDP and SCTP probes need a port from 1 to 65535".into())
    } else if !ported && (args.port != 0 || args.source_port.is_some()) {
        Outcome::LocalError(
            "--port, --source-port: ICMP has no ports (--icmp-code sets the code)".into(),
        )
    } else {
        match args.protocol {
            Proto::Tcp => connect_tcp(args, deadline),
            Proto::Udp => connect_udp(args, deadline),
            Proto::Sctp => connect_sctp(args, deadline),
            Proto::Icmp | Proto::Icmpv6 => ping(args, deadline),
        }
    };
    let (ok, detail, code) = match outcome {
        Outcome::Connected(d) => (true, d, EXIT_OK),
        Outcome::Blocked(d) => (false, d, EXIT_BLOCKED),
        Outcome::LocalError(d) => (false, d, EXIT_USAGE),
    };
    print_json(&ConnectReport {
        command: "connect",
        protocol: args.protocol,
        from: args.from,
        to: args.to,
        port: args.port,
        ok,
        detail,
        elapsed_ms: start.elapsed().as_millis() as u64,
    });
    ExitCode::from(code)
}

fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

/// Sorts an error from sending or receiving into a verdict or a local error. Refusals and
/// unreachability are what a filter (or an absent listener) produces, so they are verdicts.
fn classify(what: &str, e: &io::Error) -> Outcome {
    let detail = format!("{what}: {e}");
    match e.kind() {
        ErrorKind::AddrNotAvailable | ErrorKind::InvalidInput | ErrorKind::PermissionDenied => {
            Outcome::LocalError(detail)
        }
        _ => Outcome::Blocked(detail),
    }
}

fn bound_socket(args: &ConnectArgs, ty: Type, protocol: Protocol) -> Result<Socket, Outcome> {
    let socket = new_socket(args.to, ty, protocol)
        .map_err(|e| Outcome::LocalError(format!("socket: {e}")))?;
    if args.from.is_some() || args.source_port.is_some() {
        let any = if args.to.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        };
        let local = SocketAddr::new(args.from.unwrap_or(any), args.source_port.unwrap_or(0));
        if args.source_port.is_some() {
            socket
                .set_reuse_address(true)
                .map_err(|e| Outcome::LocalError(format!("SO_REUSEADDR: {e}")))?;
        }
        socket
            .bind(&local.into())
            .map_err(|e| Outcome::LocalError(format!("binding {local}: {e}")))?;
    }
    Ok(socket)
}

fn connect_tcp(args: &ConnectArgs, deadline: Instant) -> Outcome {
    let socket = match bound_socket(args, Type::STREAM, Protocol::TCP) {
        Ok(s) => s,
        Err(o) => return o,
    };
    let target = SocketAddr::new(args.to, args.port);
    let Some(left) = remaining(deadline) else {
        return Outcome::Blocked("timed out".into());
    };
    if let Err(e) = socket.connect_timeout(&target.into(), left) {
        return classify("connect", &e);
    }
    if args.source_port.is_some() {
        // Close with a reset: a TIME_WAIT on this fixed port would refuse the next probe.
        if let Err(e) = socket.set_linger(Some(Duration::ZERO)) {
            return Outcome::LocalError(format!("SO_LINGER: {e}"));
        }
    }
    // Connected; a short echo round trip shows that data passes too, not just the handshake.
    let mut stream: TcpStream = socket.into();
    let message = format!("pw-probe {:016x}\n", random_u64());
    let mut echoed = vec![0u8; message.len()];
    let result = (|| {
        let left = remaining(deadline).ok_or_else(|| io::Error::from(ErrorKind::TimedOut))?;
        stream.set_read_timeout(Some(left))?;
        stream.set_write_timeout(Some(left))?;
        stream.write_all(message.as_bytes())?;
        stream.read_exact(&mut echoed)
    })();
    match result {
        Ok(()) if echoed == message.as_bytes() => Outcome::Connected("connected, echo ok".into()),
        Ok(()) => Outcome::Blocked("connected, but the echo differs".into()),
        Err(e) => classify("connected, but no echo", &e),
    }
}

/// An echo request over a raw socket (root inside the namespace; the ping sockets of
/// unprivileged users are off in a new namespace), and a wait for its reply among whatever else
/// ICMP the namespace receives. The target's kernel answers; nothing needs to listen.
fn ping(args: &ConnectArgs, deadline: Instant) -> Outcome {
    let v6 = matches!(args.protocol, Proto::Icmpv6);
    if v6 == args.to.is_ipv4() {
        return Outcome::LocalError(format!(
            "--to {}: ICMP is sent to IPv4 addresses, ICMPv6 to IPv6 ones",
            args.to
        ));
    }
    let protocol = if v6 {
        Protocol::ICMPV6
    } else {
        Protocol::ICMPV4
    };
    // Not `bound_socket`: IPV6_V6ONLY is for sockets with ports.
    let domain = Domain::for_address(SocketAddr::new(args.to, 0));
    let socket = match Socket::new(domain, Type::RAW, Some(protocol)) {
        Ok(s) => s,
        Err(e) => return Outcome::LocalError(format!("raw socket (needs root): {e}")),
    };
    if let Some(from) = args.from {
        if let Err(e) = socket.bind(&SocketAddr::new(from, 0).into()) {
            return Outcome::LocalError(format!("binding {from}: {e}"));
        }
    }
    // Connected: the socket receives only what the target sends.
    if let Err(e) = socket.connect(&SocketAddr::new(args.to, 0).into()) {
        return classify("connect", &e);
    }
    let mut payload = [0u8; 16];
    XorShift(random_u64() | 1).fill(&mut payload);
    let echo = harness::icmp::Echo {
        v6,
        id: random_u64() as u16,
        seq: 1,
        code: args.icmp_code,
        payload,
    };
    if let Err(e) = socket.send(&echo.request()) {
        return classify("send", &e);
    }
    let mut reader: &Socket = &socket;
    let mut buf = [0u8; 2048];
    loop {
        let Some(left) = remaining(deadline) else {
            return Outcome::Blocked("no echo reply: timed out".into());
        };
        if let Err(e) = socket.set_read_timeout(Some(left)) {
            return Outcome::LocalError(format!("set_read_timeout: {e}"));
        }
        match reader.read(&mut buf) {
            Ok(n) if echo.is_reply(&buf[..n]) => {
                return Outcome::Connected("echo reply".into());
            }
            Ok(_) => {} // another probe's reply, or other ICMP
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Outcome::Blocked("no echo reply: timed out".into());
            }
            Err(e) => return classify("receive", &e),
        }
    }
}

fn connect_udp(args: &ConnectArgs, deadline: Instant) -> Outcome {
    let socket = match bound_socket(args, Type::DGRAM, Protocol::UDP) {
        Ok(s) => s,
        Err(o) => return o,
    };
    let socket: UdpSocket = socket.into();
    // Connected, so only the target's replies arrive and an ICMP port unreachable shows up as
    // ECONNREFUSED.
    if let Err(e) = socket.connect(SocketAddr::new(args.to, args.port)) {
        return classify("connect", &e);
    }
    let message = format!("pw-probe {:016x}", random_u64());
    let mut buf = [0u8; 256];
    let interval = retry_interval(args.timeout_ms);
    // Datagrams may be lost; send again a few times within the timeout.
    while let Some(left) = remaining(deadline) {
        if let Err(e) = socket.send(message.as_bytes()) {
            return classify("send", &e);
        }
        let wait_until = Instant::now() + left.min(interval);
        while let Some(wait) = remaining(wait_until) {
            if let Err(e) = socket.set_read_timeout(Some(wait)) {
                return Outcome::LocalError(format!("set_read_timeout: {e}"));
            }
            match socket.recv(&mut buf) {
                Ok(n) if &buf[..n] == message.as_bytes() => {
                    return Outcome::Connected("echo received".into())
                }
                Ok(_) => {} // a stale or foreign datagram: keep waiting
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return classify("recv", &e),
            }
        }
    }
    Outcome::Blocked("timed out waiting for the echo".into())
}

fn retry_interval(timeout_ms: u64) -> Duration {
    Duration::from_millis((timeout_ms / 3).max(50))
}

fn connect_sctp(args: &ConnectArgs, deadline: Instant) -> Outcome {
    let socket = match raw_sctp_socket(args.to, args.from) {
        Ok(s) => s,
        Err(e) => return Outcome::LocalError(format!("raw SCTP socket: {e}")),
    };
    let tag = nonzero_random_u32();
    // Without --source-port, an ephemeral port from the range Linux uses, so it looks like a
    // real client's.
    let src_port = args
        .source_port
        .unwrap_or(32_768 + (random_u64() % 28_232) as u16);
    let init = sctp::init(src_port, args.port, tag, random_u64() as u32);
    let interval = retry_interval(args.timeout_ms);
    let mut buf = vec![0u8; 65_536];
    while let Some(left) = remaining(deadline) {
        if let Err(e) = socket.send_to(&init, SocketAddr::new(args.to, 0)) {
            return classify("send INIT", &e);
        }
        let wait_until = Instant::now() + left.min(interval);
        while let Some(wait) = remaining(wait_until) {
            if let Err(e) = socket.set_read_timeout(Some(wait)) {
                return Outcome::LocalError(format!("set_read_timeout: {e}"));
            }
            let (n, peer) = match socket.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return classify("recv", &e),
            };
            // A raw socket sees every SCTP packet of the namespace: keep only the answer to
            // this INIT (from the target, between our ports, carrying our tag).
            let (source, payload) = if args.to.is_ipv4() {
                match sctp::split_ipv4(&buf[..n]) {
                    Some((src, _, payload)) => (IpAddr::V4(src), payload),
                    None => continue,
                }
            } else {
                (peer.ip(), &buf[..n])
            };
            let Some(packet) = sctp::parse(payload) else {
                continue;
            };
            if source != args.to
                || !packet.checksum_ok
                || packet.src_port != args.port
                || packet.dst_port != src_port
                || packet.verification_tag != tag
            {
                continue;
            }
            match packet.chunk_type {
                sctp::CHUNK_INIT_ACK => return Outcome::Connected("INIT-ACK received".into()),
                sctp::CHUNK_ABORT => return Outcome::Blocked("ABORT received".into()),
                _ => {}
            }
        }
    }
    Outcome::Blocked("timed out waiting for INIT-ACK".into())
}

// ---------------------------------------------------------------------------------------------
// transfer

#[derive(Serialize)]
struct TransferReport {
    command: &'static str,
    from: Option<IpAddr>,
    to: IpAddr,
    port: u16,
    ok: bool,
    detail: String,
    bytes: u64,
    sha256: String,
    far_sha256: Option<String>,
    far_bytes: Option<u64>,
    elapsed_ms: u64,
    mbit_per_s: f64,
}

fn transfer(args: &TransferArgs) -> ExitCode {
    let start = Instant::now();
    let deadline = start + Duration::from_millis(args.timeout_ms);
    let mut report = TransferReport {
        command: "transfer",
        from: args.from,
        to: args.to,
        port: args.port,
        ok: false,
        detail: String::new(),
        bytes: args.bytes,
        sha256: String::new(),
        far_sha256: None,
        far_bytes: None,
        elapsed_ms: 0,
        mbit_per_s: 0.0,
    };
    let code = match run_transfer(args, deadline, &mut report) {
        Ok(())
            if report.far_sha256.as_deref() == Some(report.sha256.as_str())
                && report.far_bytes == Some(args.bytes) =>
        {
            report.ok = true;
            report.detail = "far end's SHA-256 matches".into();
            EXIT_OK
        }
        Ok(()) => {
            report.detail = "far end's SHA-256 or byte count differs".into();
            EXIT_BLOCKED
        }
        Err(Outcome::LocalError(d)) => {
            report.detail = d;
            EXIT_USAGE
        }
        Err(Outcome::Blocked(d) | Outcome::Connected(d)) => {
            report.detail = d;
            EXIT_BLOCKED
        }
    };
    let elapsed = start.elapsed();
    report.elapsed_ms = elapsed.as_millis() as u64;
    if report.ok {
        report.mbit_per_s = args.bytes as f64 * 8.0 / 1e6 / elapsed.as_secs_f64().max(1e-9);
    }
    print_json(&report);
    ExitCode::from(code)
}

fn run_transfer(
    args: &TransferArgs,
    deadline: Instant,
    report: &mut TransferReport,
) -> Result<(), Outcome> {
    let socket = new_socket(args.to, Type::STREAM, Protocol::TCP)
        .map_err(|e| Outcome::LocalError(format!("socket: {e}")))?;
    if let Some(from) = args.from {
        socket
            .bind(&SocketAddr::new(from, 0).into())
            .map_err(|e| Outcome::LocalError(format!("binding {from}: {e}")))?;
    }
    let left = remaining(deadline).ok_or_else(|| Outcome::Blocked("timed out".into()))?;
    socket
        .connect_timeout(&SocketAddr::new(args.to, args.port).into(), left)
        .map_err(|e| classify("connect", &e))?;
    let mut stream: TcpStream = socket.into();
    let io_err = |what: &'static str| move |e: io::Error| classify(what, &e);
    let mut generator = XorShift(random_u64() | 1);
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    while sent < args.bytes {
        let n = (args.bytes - sent).min(chunk.len() as u64) as usize;
        generator.fill(&mut chunk[..n]);
        hasher.update(&chunk[..n]);
        let left = remaining(deadline).ok_or_else(|| Outcome::Blocked("timed out".into()))?;
        stream
            .set_write_timeout(Some(left))
            .map_err(io_err("set_write_timeout"))?;
        stream.write_all(&chunk[..n]).map_err(io_err("send"))?;
        sent += n as u64;
    }
    report.sha256 = hex(&hasher.finalize());
    stream
        .shutdown(Shutdown::Write)
        .map_err(io_err("shutdown"))?;
    let left = remaining(deadline).ok_or_else(|| Outcome::Blocked("timed out".into()))?;
    stream
        .set_read_timeout(Some(left))
        .map_err(io_err("set_read_timeout"))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(io_err("reading the far end's hash"))?;
    let mut fields = line.split_whitespace();
    report.far_sha256 = fields.next().map(str::to_string);
    report.far_bytes = fields.next().and_then(|b| b.parse().ok());
    if report.far_sha256.is_none() {
        return Err(Outcome::Blocked("the far end closed without a hash".into()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// flood

#[derive(Serialize)]
struct FloodReport {
    command: &'static str,
    to: IpAddr,
    port: u16,
    size: u16,
    flows: u16,
    /// Datagrams the kernel accepted (`send` returned the length).
    sent: u64,
    /// `send` calls that failed (ENOBUFS, ECONNREFUSED after an ICMP error, …).
    errors: u64,
    first_error: Option<String>,
    seconds: f64,
    pps: f64,
    interface: Option<InterfaceDelta>,
}

/// How an interface's counters moved over a run (from /sys/class/net/IF/statistics).
#[derive(Serialize, Default)]
struct InterfaceDelta {
    name: String,
    packets: u64,
    dropped: u64,
}

fn interface_counter(interface: &str, name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/sys/class/net/{interface}/statistics/{name}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A snapshot of an interface's `{dir}_packets` and `{dir}_dropped`.
fn interface_snapshot(interface: &str, dir: &str) -> Option<(u64, u64)> {
    Some((
        interface_counter(interface, &format!("{dir}_packets"))?,
        interface_counter(interface, &format!("{dir}_dropped"))?,
    ))
}

fn interface_delta(
    interface: Option<&str>,
    dir: &str,
    before: Option<(u64, u64)>,
) -> Option<InterfaceDelta> {
    let name = interface?;
    let (p0, d0) = before?;
    let (p1, d1) = interface_snapshot(name, dir)?;
    Some(InterfaceDelta {
        name: name.to_string(),
        packets: p1.wrapping_sub(p0),
        dropped: d1.wrapping_sub(d0),
    })
}

fn flood(args: &FloodArgs) -> ExitCode {
    let header = if args.to.is_ipv4() { 42 } else { 62 };
    let payload = vec![0x5au8; usize::from(args.size).saturating_sub(header)];
    let target = SocketAddr::new(args.to, args.port);
    let mut report = FloodReport {
        command: "flood",
        to: args.to,
        port: args.port,
        size: args.size,
        flows: args.flows,
        sent: 0,
        errors: 0,
        first_error: None,
        seconds: 0.0,
        pps: 0.0,
        interface: None,
    };
    if args.from.is_some_and(|f| f.is_ipv4() != args.to.is_ipv4()) {
        report.first_error = Some("--from and --to are of different address families".into());
        print_json(&report);
        return ExitCode::from(EXIT_USAGE);
    }
    // One connected socket per flow: each has its own source port, and `send` on a connected
    // socket skips the route lookup `send_to` would do.
    let mut sockets = Vec::with_capacity(args.flows.into());
    for _ in 0..args.flows {
        let socket = new_socket(args.to, Type::DGRAM, Protocol::UDP).and_then(|s| {
            if let Some(from) = args.from {
                s.bind(&SocketAddr::new(from, 0).into())?;
            }
            s.connect(&target.into())?;
            Ok(UdpSocket::from(s))
        });
        match socket {
            Ok(s) => sockets.push(s),
            Err(e) => {
                report.first_error = Some(format!("socket: {e}"));
                print_json(&report);
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let before = args
        .interface
        .as_deref()
        .and_then(|i| interface_snapshot(i, "tx"));
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(args.seconds);
    let (mut sent, mut errors) = (0u64, 0u64);
    // The clock is read about once per 256 sends (a vDSO call, but not free).
    let rounds = (256 / sockets.len()).max(1);
    'send: loop {
        for _ in 0..rounds {
            for socket in &sockets {
                match socket.send(&payload) {
                    Ok(_) => sent += 1,
                    Err(e) => {
                        errors += 1;
                        if report.first_error.is_none() {
                            report.first_error = Some(format!("send: {e}"));
                        }
                    }
                }
            }
        }
        if Instant::now() >= until {
            break 'send;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    report.interface = interface_delta(args.interface.as_deref(), "tx", before);
    report.sent = sent;
    report.errors = errors;
    report.seconds = elapsed;
    report.pps = sent as f64 / elapsed.max(1e-9);
    print_json(&report);
    ExitCode::from(if sent > 0 { EXIT_OK } else { EXIT_BLOCKED })
}

// ---------------------------------------------------------------------------------------------
// count

#[derive(Serialize)]
struct CountReport {
    command: &'static str,
    udp: u16,
    /// Datagrams read from the socket in the window.
    received: u64,
    /// The window: from the first datagram to the end of counting.
    seconds: f64,
    /// `received / seconds`.
    pps: f64,
    /// Datagrams the kernel dropped because the socket's buffer was full (the namespace's
    /// `Udp: RcvbufErrors` over the window): they arrived but this reader was too slow.
    rcvbuf_errors: Option<u64>,
    interface: Option<InterfaceDelta>,
    detail: String,
}

/// `Udp: RcvbufErrors` from this namespace's /proc/net/snmp.
fn udp_rcvbuf_errors() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let names = udp.next()?;
    let values = udp.next()?;
    let at = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

fn count_socket(args: &CountArgs) -> io::Result<UdpSocket> {
    let bind = |ip: IpAddr, only_v6: bool| -> io::Result<UdpSocket> {
        let addr = SocketAddr::new(ip, args.udp);
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if ip.is_ipv6() {
            socket.set_only_v6(only_v6)?;
        }
        // A larger buffer rides out scheduling hiccups; the kernel caps it at rmem_max.
        let _ = socket.set_recv_buffer_size(4 << 20);
        socket
            .bind(&addr.into())
            .map_err(|e| with_addr(e, "binding UDP", addr))?;
        Ok(socket.into())
    };
    match args.bind {
        Some(ip) => bind(ip, true),
        None => bind(IpAddr::V6(Ipv6Addr::UNSPECIFIED), false)
            .or_else(|_| bind(IpAddr::V4(Ipv4Addr::UNSPECIFIED), false)),
    }
}

fn count(args: &CountArgs) -> ExitCode {
    let mut report = CountReport {
        command: "count",
        udp: args.udp,
        received: 0,
        seconds: 0.0,
        pps: 0.0,
        rcvbuf_errors: None,
        interface: None,
        detail: String::new(),
    };
    let socket = match count_socket(args) {
        Ok(s) => s,
        Err(e) => {
            report.detail = format!("socket: {e}");
            print_json(&report);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    {
        let mut out = io::stdout().lock();
        if writeln!(out, "ready").and_then(|()| out.flush()).is_err() {
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let mut buf = vec![0u8; 65_536];
    // The first datagram starts the window (and is counted in it).
    let first = Instant::now() + Duration::from_millis(args.wait_ms);
    loop {
        let Some(left) = remaining(first) else {
            report.detail = format!("no datagram within {} ms", args.wait_ms);
            print_json(&report);
            return ExitCode::from(EXIT_BLOCKED);
        };
        if let Err(e) = socket.set_read_timeout(Some(left)) {
            report.detail = format!("set_read_timeout: {e}");
            print_json(&report);
            return ExitCode::from(EXIT_USAGE);
        }
        match socket.recv(&mut buf) {
            Ok(_) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                report.detail = format!("recv: {e}");
                print_json(&report);
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let start = Instant::now();
    let rcvbuf_before = udp_rcvbuf_errors();
    let if_before = args
        .interface
        .as_deref()
        .and_then(|i| interface_snapshot(i, "rx"));
    let until = start + Duration::from_secs_f64(args.seconds);
    let mut received = 1u64;
    // A read timeout is set once, short, and the clock is checked after every timeout and
    // every 1024 datagrams, so a steady stream costs one `recv` per datagram and little else.
    if let Err(e) = socket.set_read_timeout(Some(Duration::from_millis(10))) {
        report.detail = format!("set_read_timeout: {e}");
        print_json(&report);
        return ExitCode::from(EXIT_USAGE);
    }
    let mut since_check = 0u32;
    loop {
        match socket.recv(&mut buf) {
            Ok(_) => {
                received += 1;
                since_check += 1;
                if since_check < 1024 {
                    continue;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                // ECONNREFUSED and the like cannot happen on an unconnected socket; say so if
                // something else does, and stop.
                report.detail = format!("recv: {e}");
                break;
            }
        }
        since_check = 0;
        if Instant::now() >= until {
            break;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    report.received = received;
    report.seconds = elapsed;
    report.pps = received as f64 / elapsed.max(1e-9);
    report.rcvbuf_errors = rcvbuf_before
        .zip(udp_rcvbuf_errors())
        .map(|(a, b)| b.wrapping_sub(a));
    report.interface = interface_delta(args.interface.as_deref(), "rx", if_before);
    if report.detail.is_empty() {
        report.detail = "counted".into();
    }
    print_json(&report);
    ExitCode::from(EXIT_OK)
}

// ---------------------------------------------------------------------------------------------
// helpers

fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("pw-probe: could not format the result: {e}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random number from the OS, through std's randomly keyed hasher (no extra dependency).
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

fn nonzero_random_u32() -> u32 {
    loop {
        let v = random_u64() as u32;
        if v != 0 {
            return v;
        }
    }
}

/// xorshift64: fast pseudo-random payload, so a transfer is not limited by its generator and
/// a wrong byte anywhere changes the hash.
struct XorShift(u64);

impl XorShift {
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    }
}
