//! Counter tables for people.

use std::io::Write;

use datapath::node::RunningNode;

pub fn print_counters(node: &RunningNode, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<30} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>7}  malformed",
        "pod", "in-allow", "in-deny", "eg-allow", "eg-deny", "forwarded", "dropped", "logged"
    )?;
    for (attachment, counters) in node.attachments().iter().zip(node.counters()) {
        let s = counters.snapshot();
        let malformed: Vec<String> = s
            .malformed
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        writeln!(
            out,
            "{:<30} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>7}  {}",
            attachment.pod(),
            s.allowed_ingress,
            s.denied_ingress,
            s.allowed_egress,
            s.denied_egress,
            s.forwarded,
            s.dropped,
            s.logged,
            if malformed.is_empty() {
                "-".to_string()
            } else {
                malformed.join(" ")
            }
        )?;
    }
    Ok(())
}
