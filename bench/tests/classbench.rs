//! podwall against a linear scan on ClassBench: for every header of the acl1, fw1 and ipc1
//! traces at 1k and 10k rules, in both directions, the compiled classifier's first match
//! (rule index and Allow/Deny, or "no rule matched") must be the linear scan's over the same
//! converted rules. Uniformly random headers are added, and the first half of each list is
//! checked too, so that "no rule matched" is exercised (the full lists end in catch-alls).
//! Each list is checked with the default options (dense address × port products at these
//! sizes), with no budget for a dense product (steps where every row fits, else chunks), and
//! with no budget for steps either (chunks). The 100k-rule lists whose default tables take
//! steps (acl1, ipc1) are checked on headers drawn inside their rules. Run it in release mode
//! (the scan over 10k rules is slow in debug):
//!
//! ```text
//! cargo test --release -p podwall-bench --test classbench
//! ```
//!
//! Fails, naming the path, when the shared data directory is missing.

use bench::classbench::data::{list_name, read_rules, read_trace, TRACED_SIZES};
use bench::classbench::{build_with, check, sample_headers, Checked, ClassBenchRule, Header};
use bench::rng::Rng;
use policy::compile::CompileOptions;
use policy::Direction;

/// Uniformly random headers per list, on top of the trace.
const RANDOM: usize = 2_000;

fn random_headers(count: usize, seed: u64) -> Vec<Header> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| {
            let any = rng.below(256) as u8;
            Header {
                src: rng.next_u64() as u32,
                dst: rng.next_u64() as u32,
                src_port: rng.next_u64() as u16,
                dst_port: rng.next_u64() as u16,
                protocol: *rng.pick(&[1, 6, 6, 17, 17, 47, any]),
            }
        })
        .collect()
}

/// Checks the classifier compiled from `rules` against the scan on `headers`, with dense
/// products, with products in steps where every row has few enough (else chunked), and with
/// chunked products (the last two always staged), and for the 1k lists also with a product per
/// lookup instead of joint ones for source ports (each build repeats the scan, slow in a debug
/// build; the random comparisons in `policy/tests` check that layout too); returns the default
/// build's result after asserting that none has a mismatch.
fn check_list(list: &str, rules: &[ClassBenchRule], headers: &[Header]) -> Checked {
    // No dense products, and every product looked up in stages by `decide_each` however small.
    let steps = CompileOptions {
        dense_product_budget: 0,
        staged_product_bytes: 0,
        ..CompileOptions::default()
    };
    let chunked = CompileOptions {
        steps_product_budget: 0,
        ..steps
    };
    let per_lookup = CompileOptions {
        joint_product_budget: 0,
        ..CompileOptions::default()
    };
    let builds = [CompileOptions::default(), steps, chunked, per_lookup];
    let builds = &builds[..if rules.len() <= 1000 { 4 } else { 3 }];
    let checked: Vec<Checked> = builds
        .iter()
        .map(|&options| {
            let built = build_with(list, rules, options).unwrap_or_else(|e| panic!("{e:#}"));
            assert_eq!(built.conversion.rules.len(), rules.len());
            let pod = built.target.pod;
            for direction in Direction::BOTH {
                // A joint product takes the smaller chunked shape when the dense one would
                // outgrow the separate products, so only the other two builds have a known shape.
                let chunked = built.classifier.has_chunked_product(pod, direction);
                let in_steps = built.classifier.has_steps_product(pod, direction);
                assert!(
                    built.classifier.has_product(pod, direction),
                    "{list} {direction}"
                );
                if options.dense_product_budget == 0 && options.steps_product_budget == 0 {
                    assert!(chunked, "{list} {direction}");
                } else if options.dense_product_budget == 0 {
                    assert!(chunked != in_steps, "{list} {direction}");
                } else if options.joint_product_budget == 0 {
                    assert!(!chunked && !in_steps, "{list} {direction}");
                }
                eprintln!("{list} {direction}: steps {in_steps} chunked {chunked}");
            }
            let checked = check(
                &built.classifier,
                &built.target,
                &built.conversion.rules,
                headers,
            );
            let products = if options.dense_product_budget == 0 && options.steps_product_budget == 0
            {
                "chunked"
            } else if options.dense_product_budget == 0 {
                "steps where they fit"
            } else if options.joint_product_budget == 0 {
                "per lookup"
            } else {
                "default"
            };
            eprintln!("{list} ({} rules, {products}): {checked}", rules.len());
            assert!(checked.is_ok(), "{list} ({products}): {checked}");
            checked
        })
        .collect();
    checked.into_iter().next().expect("the default build")
}

fn check_seed(seed: &str) {
    for size in TRACED_SIZES {
        let list = list_name(seed, size);
        let rules = read_rules(seed, size).unwrap_or_else(|e| panic!("{e:#}"));
        let mut headers = read_trace(seed, size).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(!headers.is_empty(), "{list}: empty trace");
        headers.extend(random_headers(RANDOM, size as u64));

        let checked = check_list(&list, &rules, &headers);
        for tally in checked.tally {
            assert!(
                tally.allowed > 0 && tally.denied_by_rule > 0,
                "{list}: {checked}"
            );
        }
        // The lists end in catch-all rules, so "no rule matched" is rare with all of them; the
        // first half of a list leaves many trace headers unmatched.
        let half = format!("{list}-first-half");
        let checked = check_list(&half, &rules[..rules.len() / 2], &headers);
        for tally in checked.tally {
            assert!(
                tally.allowed > 0 && tally.denied_by_rule > 0 && tally.no_match > 0,
                "{half}: every outcome should occur: {checked}"
            );
        }
    }
}

#[test]
fn acl1_classifier_matches_the_linear_scan() {
    check_seed("acl1");
}

#[test]
fn fw1_classifier_matches_the_linear_scan() {
    check_seed("fw1");
}

#[test]
fn ipc1_classifier_matches_the_linear_scan() {
    check_seed("ipc1");
}

/// The 100k-rule lists whose default tables are in steps over block bases (acl1 ingress, both
/// ipc1 tables), on headers drawn inside their rules as the criterion bench draws them, and
/// uniformly random ones.
#[test]
fn acl1_and_ipc1_in_steps_at_100k_rules_match_the_linear_scan() {
    for (seed, headers_seed) in [("acl1", 0xAC11), ("ipc1", 0x19C1)] {
        check_100k(
            seed,
            headers_seed,
            CompileOptions::default(),
            |classifier, pod| classifier.has_steps_product(pod, Direction::Ingress),
        );
    }
}

/// fw1 at 100k rules: both tables in joint chunked products, their cells the ranks of their
/// slots (fw1 numbers 192,774 slots, past `u16::MAX`; by default only far larger tables keep
/// ranks).
#[test]
fn fw1_in_joint_products_at_100k_rules_with_ranked_cells_matches_the_linear_scan() {
    let ranked = CompileOptions {
        ranked_cells_bytes: 0,
        ..CompileOptions::default()
    };
    check_100k("fw1", 0xF1, ranked, |classifier, pod| {
        [Direction::Ingress, Direction::Egress]
            .into_iter()
            .all(|direction| classifier.has_joint_product(pod, direction))
    });
}

/// `seed`'s 100k-rule list, compiled with `options` into a classifier that is `in_shape`,
/// against the linear scan.
fn check_100k(
    seed: &str,
    headers_seed: u64,
    options: CompileOptions,
    in_shape: impl Fn(&policy::Classifier, policy::PodId) -> bool,
) {
    let list = list_name(seed, 100_000);
    let rules = read_rules(seed, 100_000).unwrap_or_else(|e| panic!("{e:#}"));
    let built = build_with(&list, &rules, options).unwrap_or_else(|e| panic!("{e:#}"));
    let pod = built.target.pod;
    assert!(
        in_shape(&built.classifier, pod),
        "{list}: its tables' products"
    );
    let mut headers = sample_headers(&rules, 1_000, headers_seed);
    headers.extend(random_headers(200, headers_seed));
    let checked = check(
        &built.classifier,
        &built.target,
        &built.conversion.rules,
        &headers,
    );
    eprintln!("{list} ({} rules): {checked}", rules.len());
    assert!(checked.is_ok(), "{list}: {checked}");
}
