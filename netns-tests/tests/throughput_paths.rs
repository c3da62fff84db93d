//! The throughput runner's paths carry the stream when the rules allow it and, for every path
//! that filters, drop all of it when no rule does: a figure for a path that does not enforce
//! its rules would be worthless. Each path is built as the runner builds it, with 25 rules
//! (three policies, so more than one policy chain), and its rules replaced twice, as the runner
//! does between sizes.

use std::time::Duration;

use bench::throughput::frames::Stream;
use bench::throughput::paths::{ActivePath, Cores, PathKind};
use bench::throughput::rules::RuleSet;
use bench::throughput::traffic::{measure, Generator};

fn delivered(path: &ActivePath, stream: Stream) -> f64 {
    let (netns, interface, framing) = path.sender();
    let generator = Generator::start(netns, interface, stream, framing, 0).expect("generator");
    let (sink_netns, sink_interface) = path.sink();
    let sample = measure(
        &generator,
        sink_netns,
        sink_interface,
        Duration::from_millis(200),
        Duration::from_millis(400),
    )
    .expect("measuring");
    generator.stop().expect("the generator stops cleanly");
    assert!(
        sample.offered > 1000.0,
        "{}: the generator offered only {:.0} frames/s",
        path.kind().key(),
        sample.offered
    );
    sample.delivered
}

#[test]
fn every_path_carries_allowed_traffic_and_the_filters_drop_the_rest() {
    if !harness::require_root_or_skip() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cores = Cores {
        generator: 0,
        path: if cores > 1 { 1 } else { 0 },
        priority: Some(50),
    };
    let workdir = tempdir();
    let allowing = RuleSet::generate(25);
    let denying = RuleSet::generate_denying(25);
    for kind in PathKind::ALL {
        let mut path = ActivePath::build(kind, &allowing, cores, &workdir)
            .unwrap_or_else(|e| panic!("building {}: {e:#}", kind.key()));
        let carries = |path: &ActivePath, when: &str| {
            for stream in [Stream::OneFlow, Stream::NewConnections] {
                let pps = delivered(path, stream);
                assert!(
                    pps > 1000.0,
                    "{} {when}: delivered {pps:.0} frames/s of the allowed {} stream",
                    kind.key(),
                    stream.name()
                );
            }
        };
        carries(&path, "as built");
        if let Some(drops) = path.sink_xdp_drops().expect("the sink's statistics") {
            assert!(
                drops > 1000,
                "{}: the sink's XDP program dropped only {drops} frames: the frames went \
                 another way",
                kind.key()
            );
        }
        if kind.filters() {
            path.install(&denying)
                .unwrap_or_else(|e| panic!("{}: installing rules: {e:#}", kind.key()));
            // Frames of the allowed run still in queues are gone well before this window.
            let before = path.detail();
            let pps = delivered(&path, Stream::ThousandFlows);
            assert_eq!(
                pps,
                0.0,
                "{} delivered {pps:.0} frames/s that no rule allows (before: {before:?}; after: \
                 {:?})",
                kind.key(),
                path.detail()
            );
            path.install(&allowing)
                .unwrap_or_else(|e| panic!("{}: installing rules: {e:#}", kind.key()));
            carries(&path, "after its rules were replaced");
        }
        path.finish()
            .unwrap_or_else(|e| panic!("{}: {e:#}", kind.key()));
    }
    let _ = std::fs::remove_dir_all(&workdir);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pw-throughput-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a temporary directory");
    dir
}
