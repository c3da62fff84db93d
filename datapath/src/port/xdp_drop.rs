//! A traffic sink for throughput measurements: a two-instruction XDP program that drops every
//! frame an interface receives, attached through a BPF link. The interface's `rx_packets`
//! counter then counts what arrived, at almost no cost to the receiving core.
//!
//! The link is a file descriptor: closing it (dropping the guard) detaches the program, from any
//! thread and any network namespace, and the kernel also detaches it when the process dies.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// Where the program runs: in the driver (veth) or on the generic skb path (any device, TUN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropMode {
    Native,
    Generic,
}

/// While alive, every frame the interface receives is dropped by XDP.
#[derive(Debug)]
pub struct XdpDrop {
    _link: OwnedFd,
    _program: OwnedFd,
}

impl XdpDrop {
    /// Attaches to `interface` in the calling thread's network namespace.
    pub fn attach(interface: &str, mode: DropMode) -> io::Result<XdpDrop> {
        let ifindex = super::interface_index(interface)?;
        let program = load_drop_program()?;
        let options = libbpf_sys::bpf_link_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _,
            flags: match mode {
                DropMode::Native => libbpf_sys::XDP_FLAGS_DRV_MODE,
                DropMode::Generic => libbpf_sys::XDP_FLAGS_SKB_MODE,
            },
            ..Default::default()
        };
        // SAFETY: `program` is an open BPF program descriptor; `options` is a correctly sized,
        // initialised `bpf_link_create_opts` (its `sz` says which version it is) that lives
        // across the call. libbpf only reads it.
        let fd = unsafe {
            libbpf_sys::bpf_link_create(
                std::os::fd::AsRawFd::as_raw_fd(&program),
                ifindex as i32,
                libbpf_sys::BPF_XDP,
                &options,
            )
        };
        if fd < 0 {
            return Err(io::Error::new(
                io::Error::from_raw_os_error(-fd).kind(),
                format!(
                    "attaching the XDP drop program to {interface} ({mode:?}): {}",
                    io::Error::from_raw_os_error(-fd)
                ),
            ));
        }
        // SAFETY: libbpf returned a new descriptor that nothing else owns.
        let link = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(XdpDrop {
            _link: link,
            _program: program,
        })
    }
}

fn load_drop_program() -> io::Result<OwnedFd> {
    // r0 = XDP_DROP; exit.
    let mut set_drop = libbpf_sys::bpf_insn {
        code: (libbpf_sys::BPF_ALU64 | libbpf_sys::BPF_MOV | libbpf_sys::BPF_K) as u8,
        imm: libbpf_sys::XDP_DROP as i32,
        ..Default::default()
    };
    set_drop.set_dst_reg(0);
    let exit = libbpf_sys::bpf_insn {
        code: (libbpf_sys::BPF_JMP | libbpf_sys::BPF_EXIT) as u8,
        ..Default::default()
    };
    let program = [set_drop, exit];
    let name = c"pw_drop";
    let license = c"GPL";
    // SAFETY: `program` is an array of two initialised instructions and the count says so; the
    // name and license are NUL-terminated literals; a null `opts` asks for the defaults. The
    // kernel copies the instructions during the call.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            libbpf_sys::BPF_PROG_TYPE_XDP,
            name.as_ptr(),
            license.as_ptr(),
            program.as_ptr(),
            program.len() as _,
            std::ptr::null_mut(),
        )
    };
    if fd < 0 {
        let e = io::Error::from_raw_os_error(-fd);
        return Err(io::Error::new(
            e.kind(),
            format!("loading the XDP drop program: {e}"),
        ));
    }
    // SAFETY: libbpf returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
