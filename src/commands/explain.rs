use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use policy::probe::{self, Probe};

use crate::cluster::load_and_compile;
use crate::Output;

/// Explains the connection `request` describes (its `allowed` is not used).
pub fn run(files: &[PathBuf], request: Probe, output: Output) -> Result<ExitCode> {
    request
        .packet_source_port()
        .map_err(|(field, problem)| anyhow!("--{}: {problem}", cli_flag(field)))?;
    let compiled = load_and_compile(files)?;
    let classifier = &compiled.classifier;
    let connection =
        probe::connection_of(&classifier.cluster().inventory, &request).map_err(|e| anyhow!(e))?;
    let decision = classifier.connection(
        connection.from,
        connection.to,
        connection.protocol,
        connection.port,
        connection.source_port,
    );
    let explanation = policy::explain::explain(classifier, &connection, &decision);
    match output {
        Output::Text => println!("{explanation}"),
        Output::Json => println!("{}", serde_json::to_string_pretty(&explanation)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// The command-line flag of a probe field.
fn cli_flag(field: &str) -> &'static str {
    match field {
        "protocol" => "protocol",
        "port" => "port",
        "sourcePort" => "source-port",
        _ => "icmp-type",
    }
}
