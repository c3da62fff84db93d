use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use policy::probe::{self, IpFamily, Probe};

use crate::cluster::load_and_compile;
use crate::Output;

pub fn run(
    files: &[PathBuf],
    from: &str,
    to: &str,
    protocol: &str,
    port: u16,
    family: Option<IpFamily>,
    output: Output,
) -> Result<ExitCode> {
    let compiled = load_and_compile(files)?;
    let classifier = &compiled.classifier;
    let request = Probe {
        from: from.to_string(),
        to: to.to_string(),
        protocol: protocol.to_string(),
        port,
        allowed: true,
        ip_family: family,
    };
    let connection =
        probe::connection_of(&classifier.cluster().inventory, &request).map_err(|e| anyhow!(e))?;
    let decision = classifier.connection(
        connection.from,
        connection.to,
        connection.protocol,
        connection.port,
    );
    let explanation = policy::explain::explain(classifier, &connection, &decision);
    match output {
        Output::Text => println!("{explanation}"),
        Output::Json => println!("{}", serde_json::to_string_pretty(&explanation)?),
    }
    Ok(ExitCode::SUCCESS)
}
