//! Converts a ClassBench rule list into one ordered Calico GlobalNetworkPolicy, plus the
//! Namespace and Pod it selects, and writes the manifest to stdout (the mapping is described in
//! `bench::classbench`). The counts of approximated rules go to stderr.
//!
//! ```text
//! cargo run -p podwall-bench --bin classbench_to_calico -- \
//!     ../shared/data/classbench/acl1_1000.rules.gz > acl1_1000.yaml
//! podwall check -f acl1_1000.yaml
//! ```

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use bench::classbench::convert;
use bench::classbench::data::rules_file;
use bench::classbench::manifest::{manifest, policy_name};
use clap::Parser;

/// Converts a ClassBench rule list (`.rules`, or `.rules.gz`) into a Calico
/// GlobalNetworkPolicy with one ingress and one egress rule per ClassBench rule, in order,
/// plus the Namespace `bench` and the Pod `bench/target` it selects.
///
/// Example: classbench_to_calico acl1_1000.rules.gz > acl1_1000.yaml
#[derive(Parser)]
#[command(name = "classbench_to_calico")]
struct Options {
    /// The rule list, plain or gzip-compressed (by its `.gz` extension).
    rules: PathBuf,
    /// The list's name in the policy name `classbench-<name>` [default: the file name without
    /// `.gz` and `.rules`, e.g. `acl1_1000`].
    #[arg(long)]
    name: Option<String>,
}

fn main() -> ExitCode {
    bench::exit_with(convert_list(Options::parse()))
}

fn convert_list(options: Options) -> Result<()> {
    let path = &options.rules;
    let rules = rules_file(path)?;
    let list = options.name.unwrap_or_else(|| list_name(path));
    let conversion = convert(&rules).with_context(|| format!("{}", path.display()))?;
    let name = policy_name(&list);
    let text = manifest(&name, &conversion.rules);

    let mut out = BufWriter::new(io::stdout().lock());
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")?;
    eprintln!(
        "{}: {} rules → GlobalNetworkPolicy {name} (ingress and egress rule i = ClassBench rule \
         i); approximated (ports dropped on a protocol without ports): {}; narrowed to TCP \
         (any protocol with ports): {}; with source ports: {}",
        path.display(),
        conversion.rules.len(),
        conversion.approximated,
        conversion.narrowed,
        conversion.with_source_ports,
    );
    Ok(())
}

/// `acl1_1000` for `…/acl1_1000.rules.gz`.
fn list_name(path: &std::path::Path) -> String {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = file.strip_suffix(".gz").unwrap_or(&file);
    file.strip_suffix(".rules").unwrap_or(file).to_string()
}
