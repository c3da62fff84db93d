//! The harness's one error type: what failed, in the terms of the fixture that failed, with the
//! command and its stderr when an external command was involved.

use std::io;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An external command (`ip …`, `ip netns exec …`) ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    /// An external command could not be started at all.
    #[error("could not start `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },

    /// Some other I/O failed; `what` says what the harness was doing.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },

    /// The `pw-probe` binary was found nowhere the lookup looks (see `probe::binary`).
    #[error(
        "the pw-probe binary was not found (looked at: {tried}); build it with \
         `cargo build -p podwall-harness --bin pw-probe`, or point PW_PROBE_BIN at it"
    )]
    ProbeBinaryNotFound { tried: String },

    /// A `pw-probe serve` did not print `ready` (it exited, or took too long).
    #[error("pw-probe serve in namespace {namespace} did not become ready: {detail}")]
    ProbeNotReady { namespace: String, detail: String },

    /// A `pw-probe connect`/`transfer` could not even try (exit 2: usage or local error), or
    /// printed something that is not its result line.
    #[error("pw-probe {command} in namespace {namespace} could not probe: {detail}")]
    Probe {
        namespace: String,
        command: String,
        detail: String,
    },

    /// A pod key (`namespace/name`) or host address that the topology does not contain.
    #[error("no pod or host `{0}` in this topology")]
    UnknownEndpoint(String),

    /// The topology cannot be built as asked (say, what it needs is missing from the manifests).
    #[error("topology: {0}")]
    Topology(String),
}
