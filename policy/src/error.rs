//! Where a manifest problem is (file, document, object, field) and what it is.
//!
//! Messages read like the API server's: `spec.ingress[0].from[1].ipBlock.cidr: Invalid value:
//! "10.0.0.0/33": invalid CIDR address`. Every error of a run is collected, not just the first.

use std::fmt;

/// The place of a problem in the user's input.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Location {
    /// The file name as given on the command line (`-` is standard input).
    pub file: String,
    /// 0-based index of the YAML document in the file.
    pub document: usize,
    /// Index inside a `kind: List` document, if the object came from one.
    pub item: Option<usize>,
    /// `Kind namespace/name`, once known.
    pub object: Option<String>,
    /// API-server style field path (`spec.ingress[0].ports[1].endPort`); empty for the whole object.
    pub field: String,
}

impl Location {
    pub fn document(file: &str, document: usize) -> Self {
        Location {
            file: file.to_string(),
            document,
            ..Location::default()
        }
    }

    /// The same object, another field.
    pub fn at(&self, field: impl Into<String>) -> Self {
        Location {
            field: field.into(),
            ..self.clone()
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file, self.document)?;
        if let Some(item) = self.item {
            write!(f, " items[{item}]")?;
        }
        if let Some(object) = &self.object {
            write!(f, ": {object}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        Ok(())
    }
}

/// What is wrong, in the caller's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("invalid YAML: {message}")]
    Yaml { message: String },
    #[error("{message}")]
    Schema { message: String },
    #[error("Required value")]
    Required,
    #[error("Invalid value: {value:?}: invalid CIDR address: {reason}")]
    InvalidCidr { value: String, reason: String },
    #[error("Invalid value: {except:?}: must be a strict subset of `cidr` {cidr:?}")]
    ExceptNotInCidr { except: String, cidr: String },
    #[error("Invalid value: {value:?}: must be a valid IP address")]
    InvalidIp { value: String },
    #[error("Invalid value: {value}: must be between 1 and 65535, inclusive")]
    PortOutOfRange { value: i64 },
    #[error("Invalid value: {end_port}: must be greater than or equal to `port` ({port})")]
    EndPortBelowPort { port: u16, end_port: i64 },
    #[error("Invalid value: {end_port}: may not be specified when `port` is non-numeric")]
    EndPortWithNamedPort { end_port: i64 },
    #[error("Invalid value: {end_port}: may not be specified when `port` is not specified")]
    EndPortWithoutPort { end_port: i64 },
    #[error("Invalid value: {value:?}: {reason}")]
    InvalidName { value: String, reason: String },
    #[error("Unsupported value: {value:?}: supported values: {supported}")]
    Unsupported {
        value: String,
        supported: &'static str,
    },
    #[error("Forbidden: may not specify more than 1 peer type (ipBlock and podSelector/namespaceSelector)")]
    IpBlockWithSelector,
    #[error("Required value: must specify a peer")]
    EmptyPeer,
    #[error("Invalid value: {value:?}: {reason}")]
    Invalid { value: String, reason: String },
    #[error("Invalid value: {value:?}: invalid selector at column {column}: {message}")]
    InvalidSelector {
        value: String,
        column: usize,
        message: String,
    },
    #[error("Not supported by podwall: {what}")]
    NotSupported { what: String },
    #[error("Duplicate value: {what} is defined twice (first at {first})")]
    Duplicate { what: String, first: String },
}

/// A problem found while loading: the input is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {problem}")]
pub struct Error {
    pub location: Location,
    pub problem: Problem,
}

impl Error {
    pub fn new(location: Location, problem: Problem) -> Self {
        Error { location, problem }
    }
}

/// Something accepted, but worth telling the user (a skipped kind, a masked CIDR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub location: Location,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Collects every error and warning of a run.
#[derive(Debug, Default)]
pub struct Diagnostics {
    pub errors: Vec<Error>,
    pub warnings: Vec<Warning>,
}

impl Diagnostics {
    pub fn error(&mut self, location: Location, problem: Problem) {
        self.errors.push(Error::new(location, problem));
    }

    pub fn warn(&mut self, location: Location, message: impl Into<String>) {
        self.warnings.push(Warning {
            location,
            message: message.into(),
        });
    }
}
