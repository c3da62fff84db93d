use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use policy::probe;

use crate::cluster::{load_and_compile, parse_probes};
use crate::Output;

pub fn run(files: &[PathBuf], expect: &Path, output: Output) -> Result<ExitCode> {
    let compiled = load_and_compile(files)?;
    let classifier = &compiled.classifier;
    let name = expect.display().to_string();
    let text = std::fs::read_to_string(expect)
        .with_context(|| format!("{name}: cannot read probes file"))?;
    let probes = parse_probes(&name, &text)?;
    let outcomes = probe::run(classifier, &name, &probes).map_err(|e| anyhow!(e.join("\n")))?;
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    let passed = outcomes.len() - failed;
    for outcome in &outcomes {
        let explanation =
            policy::explain::explain(classifier, &outcome.connection, &outcome.decision);
        match output {
            Output::Json => {
                let line = serde_json::json!({
                    "probe": outcome.probe,
                    "expected": outcome.probe.allowed,
                    "actual": outcome.decision.allowed(),
                    "passed": outcome.passed(),
                    "deciding_policies": explanation.deciding_policies(),
                    "explanation": explanation,
                });
                println!("{}", serde_json::to_string(&line)?);
            }
            Output::Text if !outcome.passed() => {
                let p = &outcome.probe;
                println!(
                    "MISMATCH {} -> {} {}: expected {}, policy says {}",
                    p.from,
                    p.to,
                    policy::probe::packet_label(
                        outcome.connection.protocol,
                        outcome.connection.port
                    ),
                    allowed_word(p.allowed),
                    allowed_word(outcome.decision.allowed())
                );
                for line in explanation.to_string().lines() {
                    println!("    {line}");
                }
            }
            Output::Text => {}
        }
    }
    let summary = format!("{passed} passed, {failed} failed");
    match output {
        Output::Text => println!("{summary}"),
        Output::Json => eprintln!("{summary}"),
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn allowed_word(allowed: bool) -> &'static str {
    if allowed {
        "allowed"
    } else {
        "denied"
    }
}
