//! The ClassBench files in the shared data directory: where they are, and reading them
//! (gzip-compressed or plain) with errors that name the file and the line.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::headers::sample_headers;
use super::parse::{parse_rules, parse_trace, ClassBenchRule, Header};

/// `/work/shared/data/classbench` seen from this crate (`/work/main/bench`).
pub const DATA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/classbench");

/// The seeds the lists were generated from.
pub const SEEDS: [&str; 3] = ["acl1", "fw1", "ipc1"];
/// Rule list sizes (nominal; the generator removes redundant rules, so lists are a bit shorter).
pub const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
/// Sizes with a trace.
pub const TRACED_SIZES: [usize; 2] = [1_000, 10_000];

/// The data directory, or an error naming it if it is missing.
pub fn data_dir() -> Result<PathBuf> {
    existing_dir(Path::new(DATA_DIR))
}

fn existing_dir(dir: &Path) -> Result<PathBuf> {
    if !dir.is_dir() {
        bail!(
            "the ClassBench data directory {} is missing: it should hold \
             {{acl1,fw1,ipc1}}_{{1000,10000,100000}}.rules.gz and the .trace.gz files",
            dir.display()
        );
    }
    Ok(dir.to_path_buf())
}

/// The seeds a command line named, or all of them.
pub fn seeds_or_all(named: Option<Vec<String>>) -> Vec<String> {
    named.unwrap_or_else(|| SEEDS.iter().map(|s| s.to_string()).collect())
}

/// A list's name, e.g. `acl1_1000`.
pub fn list_name(seed: &str, size: usize) -> String {
    format!("{seed}_{size}")
}

/// Reads and parses `<dir>/<seed>_<size>.rules.gz`.
pub fn read_rules(seed: &str, size: usize) -> Result<Vec<ClassBenchRule>> {
    rules_file(&data_dir()?.join(format!("{}.rules.gz", list_name(seed, size))))
}

/// Reads and parses `<dir>/<seed>_<size>.trace.gz`.
pub fn read_trace(seed: &str, size: usize) -> Result<Vec<Header>> {
    trace_file(&data_dir()?.join(format!("{}.trace.gz", list_name(seed, size))))
}

/// Reads and parses a rule list file (gzip if its name ends in `.gz`).
pub fn rules_file(path: &Path) -> Result<Vec<ClassBenchRule>> {
    parse_rules(&read_text(path)?).with_context(|| format!("{}", path.display()))
}

/// Reads and parses a trace file (gzip if its name ends in `.gz`).
pub fn trace_file(path: &Path) -> Result<Vec<Header>> {
    parse_trace(&read_text(path)?).with_context(|| format!("{}", path.display()))
}

/// Headers drawn inside a list's rules for the benches: this many, with this seed, so that
/// every run and every size draws alike (see [`sample_headers`]).
pub const GENERATED_HEADERS: usize = 10_000;
pub const GENERATED_SEED: u64 = 0xC1A5_5BE7C;

/// The header sets the benches time a list on: its trace, where it has one, and
/// [`GENERATED_HEADERS`] drawn inside its `rules`.
pub fn header_sets(
    seed: &str,
    size: usize,
    rules: &[ClassBenchRule],
) -> Result<Vec<(&'static str, Vec<Header>)>> {
    let mut sets = Vec::new();
    if TRACED_SIZES.contains(&size) {
        sets.push(("trace", read_trace(seed, size)?));
    }
    sets.push((
        "generated",
        sample_headers(rules, GENERATED_HEADERS, GENERATED_SEED),
    ));
    Ok(sets)
}

/// The text of `path`, decompressed if its name ends in `.gz`.
pub fn read_text(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut text = String::new();
    let read = if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(file).read_to_string(&mut text)
    } else {
        file.read_to_string(&mut text)
    };
    read.with_context(|| format!("reading {}", path.display()))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_data_directory_is_an_error_naming_it() {
        let err = existing_dir(Path::new("/nonexistent/classbench")).unwrap_err();
        assert!(
            err.to_string()
                .contains("/nonexistent/classbench is missing"),
            "{err}"
        );
    }
}
