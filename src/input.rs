//! Reading `-f` arguments: files, directories (every `*.yaml`/`*.yml` inside, recursively, in
//! name order) and `-` for standard input.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use policy::Source;

pub fn read_sources(paths: &[PathBuf]) -> Result<Vec<Source>> {
    let mut sources = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading manifests from standard input")?;
            sources.push(Source::new("-", text));
        } else if path.is_dir() {
            let mut files = Vec::new();
            collect_yaml(path, &mut files)?;
            if files.is_empty() {
                bail!(
                    "{}: directory holds no *.yaml or *.yml files",
                    path.display()
                );
            }
            for file in files {
                sources.push(read_file(&file)?);
            }
        } else {
            sources.push(read_file(path)?);
        }
    }
    Ok(sources)
}

fn read_file(path: &Path) -> Result<Source> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read manifest file", path.display()))?;
    Ok(Source::new(path.display().to_string(), text))
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list directory", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("{}: cannot list directory", dir.display()))?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect_yaml(&entry, out)?;
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(entry);
        }
    }
    Ok(())
}
