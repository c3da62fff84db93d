//! Loading Calico `projectcalico.org/v3` objects: defaults, every field's validation with the
//! place of the error, ordering, and the semantics of actions on small hand-made clusters.

use std::net::IpAddr;
use std::sync::Arc;

use policy::calico::rule::{icmp_port, CalicoPort};
use policy::netpol::{Action, PolicyKind};
use policy::{load, Classifier, Cluster, Decision, Direction, Protocol, Rejected, Source};

const CLUSTER: &str = "
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: x, labels: {team: a}}}
- {apiVersion: v1, kind: Namespace, metadata: {name: y, labels: {team: b}}}
- {apiVersion: v1, kind: Pod, metadata: {name: web, namespace: x, labels: {app: web}}, spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}, status: {podIP: 10.0.0.1}}
- {apiVersion: v1, kind: Pod, metadata: {name: db, namespace: x, labels: {app: db}}, status: {podIP: 10.0.0.2}}
- {apiVersion: v1, kind: Pod, metadata: {name: web, namespace: y, labels: {app: web}}, status: {podIP: 10.0.1.1}}
";

fn load_policies(policies: &str) -> Result<Cluster, Rejected> {
    load(&[
        Source::new("cluster.yaml", CLUSTER),
        Source::new("policies.yaml", policies),
    ])
}

fn errors(policies: &str) -> Vec<String> {
    match load_policies(policies) {
        Ok(_) => panic!("expected errors:\n{policies}"),
        Err(rejected) => rejected.errors.iter().map(ToString::to_string).collect(),
    }
}

fn policy(kind: &str, name: &str, spec: &str) -> String {
    let namespace = if kind == "NetworkPolicy" {
        ", namespace: x"
    } else {
        ""
    };
    format!("apiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata: {{name: {name}{namespace}}}\nspec:\n{spec}\n---\n")
}

/// Decides `from` → `to` (addresses) on `protocol`/`port`, both ends.
fn allowed(cluster: Cluster, from: &str, to: &str, protocol: Protocol, port: u16) -> bool {
    allowed_from(
        cluster,
        from,
        to,
        protocol,
        port,
        policy::probe::DEFAULT_SOURCE_PORT,
    )
}

/// [`allowed`] from `source_port`.
fn allowed_from(
    cluster: Cluster,
    from: &str,
    to: &str,
    protocol: Protocol,
    port: u16,
    source_port: u16,
) -> bool {
    let classifier = Classifier::compile(Arc::new(cluster));
    let inventory = &classifier.cluster().inventory;
    let party = |ip: &str| {
        let ip: IpAddr = ip.parse().unwrap();
        match inventory.pod_by_address(ip) {
            Some(pod) => policy::Party::Pod { pod, address: ip },
            None => policy::Party::External(ip),
        }
    };
    classifier
        .connection(party(from), party(to), protocol, port, source_port)
        .allowed()
}

#[test]
fn types_tier_and_selector_default_as_calico_documents() {
    let text = [
        policy("NetworkPolicy", "none", "  selector: app == 'web'"),
        policy(
            "NetworkPolicy",
            "ingress-only",
            "  ingress: [{action: Allow}]",
        ),
        policy(
            "NetworkPolicy",
            "egress-only",
            "  egress: [{action: Allow}]",
        ),
        policy(
            "GlobalNetworkPolicy",
            "both",
            "  ingress: [{action: Allow}]\n  egress: [{action: Allow}]",
        ),
    ]
    .concat();
    let cluster = load_policies(&text).unwrap();
    let types = |name: &str| {
        let p = cluster.policies.iter().find(|p| p.name == name).unwrap();
        (p.types, p.tier.clone(), p.kind)
    };
    assert_eq!(types("none").0, [true, false]);
    assert_eq!(types("ingress-only").0, [true, false]);
    assert_eq!(types("egress-only").0, [false, true]);
    assert_eq!(
        types("both"),
        ([true, true], "default".into(), PolicyKind::CalicoGlobal)
    );
    // `selector` absent is all(): the egress-only policy selects both pods of x, not y's.
    let selected: Vec<String> = cluster
        .inventory
        .pod_ids()
        .filter(|&pod| {
            let index = cluster
                .policies
                .iter()
                .position(|p| p.name == "egress-only")
                .unwrap();
            policy::reference::selects(&cluster, index, pod)
        })
        .map(|pod| cluster.inventory.pod(pod).key())
        .collect();
    assert_eq!(selected, ["x/web", "x/db"]);
}

#[test]
fn every_field_is_read() {
    let text = policy(
        "GlobalNetworkPolicy",
        "all-fields",
        r#"  order: 12.5
  selector: has(app)
  namespaceSelector: team == 'a'
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: 17
    notProtocol: TCP
    ipVersion: 4
    source:
      nets: [10.0.0.0/8, 192.168.1.1]
      notNets: [10.9.0.0/16]
      selector: app in {'web', "db"}
      notSelector: "!has(app)"
      namespaceSelector: global() || team == 'b'
    destination:
      ports: [80, "1000:2000", http]
      notPorts: [1500]
  - action: Log
    protocol: ICMP
    icmp: {type: 3, code: 1}
    notICMP: {type: 3, code: 2}"#,
    );
    let cluster = load_policies(&text).unwrap();
    let p = &cluster.policies[0];
    assert_eq!(p.order, Some(12.5));
    let rule = p.ingress[0].calico.as_ref().unwrap();
    assert_eq!(p.ingress[0].action, Action::Deny);
    assert_eq!(rule.protocol, Some(Protocol::UDP));
    assert_eq!(rule.not_protocol, Some(Protocol::TCP));
    assert_eq!(rule.ip_version, Some(4));
    assert_eq!(rule.source.nets.len(), 2);
    assert_eq!(rule.source.nets[1].to_string(), "192.168.1.1/32");
    assert_eq!(rule.source.not_nets.len(), 1);
    assert_eq!(
        rule.destination.ports,
        [
            CalicoPort::Range(80, 80),
            CalicoPort::Range(1000, 2000),
            CalicoPort::Named("http".into())
        ]
    );
    assert_eq!(rule.destination.not_ports, [CalicoPort::Range(1500, 1500)]);
    let log = p.ingress[1].calico.as_ref().unwrap();
    assert_eq!(p.ingress[1].action, Action::Log);
    assert!(log.icmp_matches(icmp_port(3, 1)));
    assert!(!log.icmp_matches(icmp_port(3, 2)));
    assert!(!log.icmp_matches(icmp_port(8, 0)));
}

#[test]
fn invalid_fields_are_errors_that_name_their_place() {
    let cases: [(&str, &str, &str); 14] = [
        (
            "  ingress: [{protocol: TCP}]",
            "spec.ingress[0].action: Required value",
            "action",
        ),
        (
            "  ingress: [{action: Reject}]",
            "spec.ingress[0].action: Unsupported value: \"Reject\"",
            "unknown action",
        ),
        (
            "  ingress: [{action: Allow, protocol: TCPX}]",
            "spec.ingress[0].protocol: Unsupported value: \"TCPX\"",
            "protocol name",
        ),
        (
            "  ingress: [{action: Allow, protocol: 256}]",
            "spec.ingress[0].protocol: Unsupported value: \"256\"",
            "protocol number",
        ),
        (
            "  ingress: [{action: Allow, destination: {ports: [80]}}]",
            "spec.ingress[0].destination.ports: Invalid value: \"ports\": ports need `protocol` TCP, UDP, SCTP or UDPLite",
            "ports without a protocol",
        ),
        (
            "  ingress: [{action: Allow, protocol: TCP, destination: {ports: [\"90:80\"]}}]",
            "spec.ingress[0].destination.ports[0]: Invalid value: \"90:80\": the range's start is above its end",
            "inverted range",
        ),
        (
            "  ingress: [{action: Allow, protocol: TCP, destination: {ports: [70000]}}]",
            "spec.ingress[0].destination.ports[0]: Invalid value: \"70000\"",
            "port out of range",
        ),
        (
            "  ingress: [{action: Allow, protocol: TCP, icmp: {type: 8}}]",
            "spec.ingress[0].icmp: Invalid value: \"icmp\": ICMP type and code need `protocol: ICMP` or `protocol: ICMPv6`",
            "icmp without an ICMP protocol",
        ),
        (
            "  ingress: [{action: Allow, protocol: ICMP, icmp: {code: 1}}]",
            "spec.ingress[0].icmp.type: Invalid value: \"\": a code needs a type",
            "code without type",
        ),
        (
            "  ingress: [{action: Allow, protocol: ICMP, ipVersion: 6}]",
            "spec.ingress[0].ipVersion: Invalid value: \"6\": protocol ICMP is not used with IP version 6",
            "ICMP over IPv6",
        ),
        (
            "  ingress: [{action: Allow, ipVersion: 6, source: {nets: [10.0.0.0/8]}}]",
            "spec.ingress[0].source.nets[0]: Invalid value: \"10.0.0.0/8\": an IPv4 network in a rule with ipVersion 6",
            "net of the other family",
        ),
        (
            "  selector: app == 'web' &&",
            "spec.selector: Invalid value: \"app == 'web' &&\": invalid selector at column 16: expected a selector, found the end",
            "selector syntax",
        ),
        (
            "  ingress: [{action: Allow, source: {ports: [80]}}]",
            "spec.ingress[0].source.ports: Invalid value: \"ports\": ports need `protocol` TCP, UDP, SCTP or UDPLite",
            "source ports without a protocol",
        ),
        (
            "  tier: platform\n  ingress: [{action: Allow}]",
            "spec.tier: Invalid value: \"platform\": no projectcalico.org/v3 Tier of that name was loaded",
            "unknown tier",
        ),
    ];
    for (spec, expected, what) in cases {
        let text = policy("GlobalNetworkPolicy", "bad", spec);
        let errors = errors(&text);
        assert!(
            errors.iter().any(|e| e.contains(expected)
                && e.starts_with("policies.yaml: document 0: GlobalNetworkPolicy bad: ")),
            "{what}: expected {expected:?} in {errors:#?}"
        );
    }
}

#[test]
fn namespaced_only_and_global_only_fields_are_errors() {
    let text = policy(
        "NetworkPolicy",
        "p",
        "  namespaceSelector: all()\n  doNotTrack: true",
    );
    let errors = errors(&text);
    assert!(errors
        .iter()
        .any(|e| e.contains("spec.namespaceSelector: unknown field for a Calico NetworkPolicy")));
    assert!(errors
        .iter()
        .any(|e| e.contains("spec.doNotTrack: unknown field for a Calico NetworkPolicy")));
    let global = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g, namespace: x}\nspec: {}\n";
    assert!(errors_of(global).contains(
        "metadata.namespace: Invalid value: \"x\": a GlobalNetworkPolicy is not namespaced"
    ));
}

fn errors_of(text: &str) -> String {
    errors(text).join("\n")
}

#[test]
fn host_endpoint_policies_are_skipped_with_a_warning() {
    let text = policy(
        "GlobalNetworkPolicy",
        "host",
        "  preDNAT: true\n  applyOnForward: true\n  ingress: [{action: Deny}]",
    );
    let cluster = load_policies(&text).unwrap();
    assert!(cluster.policies.is_empty());
    assert!(cluster
        .warnings
        .iter()
        .any(|w| w.message.contains("apply to host endpoints")));
}

#[test]
fn policies_are_ordered_by_tier_then_order_then_name() {
    let text = [
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: first}\nspec: {order: 10}\n---\n".to_string(),
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: unordered}\nspec: {}\n---\n".to_string(),
        policy("GlobalNetworkPolicy", "z-no-order", "  selector: all()"),
        policy("GlobalNetworkPolicy", "b-late", "  order: 2000"),
        policy("GlobalNetworkPolicy", "a-late", "  order: 2000"),
        policy("NetworkPolicy", "early", "  order: 5"),
        policy("GlobalNetworkPolicy", "security", "  tier: first\n  order: 900"),
        policy("GlobalNetworkPolicy", "last-tier", "  tier: unordered\n  order: 1"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: k8s, namespace: x}\nspec: {podSelector: {}}\n".to_string(),
    ]
    .concat();
    let cluster = load_policies(&text).unwrap();
    let names: Vec<&str> = cluster.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "security",
            "early",
            "k8s",
            "a-late",
            "b-late",
            "z-no-order",
            "last-tier"
        ]
    );
    let tiers: Vec<&str> = cluster.tiers.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(tiers, ["first", "default", "unordered"]);
}

#[test]
fn the_first_allow_or_deny_decides_and_log_goes_on() {
    let text = policy(
        "NetworkPolicy",
        "db",
        "  selector: app == 'db'\n  ingress:\n  - {action: Log}\n  - {action: Deny, source: {selector: app == 'web'}, protocol: TCP, destination: {ports: [5432]}}\n  - {action: Allow, source: {selector: app == 'web'}}",
    );
    let cluster = load_policies(&text).unwrap();
    let classifier = Classifier::compile(Arc::new(cluster));
    let db = classifier.cluster().inventory.pod_id("x", "db").unwrap();
    let web: IpAddr = "10.0.0.1".parse().unwrap();
    let decide = |port| classifier.decide(db, Direction::Ingress, web, Protocol::TCP, port, 40000);
    assert!(matches!(decide(5432), Decision::DeniedBy(r) if r.rule == 1));
    assert!(matches!(decide(80), Decision::Allowed(r) if r.rule == 2));
    let logged = classifier.logged(db, Direction::Ingress, web, Protocol::TCP, 80, 40000);
    assert_eq!(logged.map(|r| r.rule), Some(0));
    // From another namespace the selector does not match: the end of the tier denies.
    let other: IpAddr = "10.0.1.1".parse().unwrap();
    assert!(matches!(
        classifier.decide(db, Direction::Ingress, other, Protocol::TCP, 80, 40000),
        Decision::Denied { .. }
    ));
}

#[test]
fn pass_skips_the_rest_of_the_tier_and_a_pass_tier_default_passes() {
    let tier = |action: &str| {
        format!("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: sec}}\nspec: {{order: 1, defaultAction: {action}}}\n---\n")
    };
    let policies = |action: &str| {
        [
            tier(action),
            policy(
                "GlobalNetworkPolicy",
                "sec-gate",
                "  tier: sec\n  selector: app == 'web'\n  ingress:\n  - {action: Pass, protocol: TCP, destination: {ports: [80]}}\n  - {action: Deny, protocol: TCP, destination: {ports: [80, 81]}}",
            ),
            policy(
                "NetworkPolicy",
                "web",
                "  selector: app == 'web'\n  ingress: [{action: Deny, protocol: TCP, destination: {ports: [80]}}]",
            ),
        ]
        .concat()
    };
    let cluster = load_policies(&policies("Deny")).unwrap();
    // Port 80 passes the security tier and is denied by the default tier.
    assert!(!allowed(
        cluster.clone(),
        "10.0.0.2",
        "10.0.0.1",
        Protocol::TCP,
        80
    ));
    // Port 81: denied in the security tier. Port 82: nothing decides in the security tier.
    assert!(!allowed(
        cluster.clone(),
        "10.0.0.2",
        "10.0.0.1",
        Protocol::TCP,
        81
    ));
    assert!(!allowed(cluster, "10.0.0.2", "10.0.0.1", Protocol::TCP, 82));
    // With defaultAction Pass, port 82 goes on to the default tier, whose policy has no rule for
    // it either: denied there. y/web is selected only by the security policy: passed, allowed.
    let cluster = load_policies(&policies("Pass")).unwrap();
    assert!(!allowed(
        cluster.clone(),
        "10.0.0.2",
        "10.0.0.1",
        Protocol::TCP,
        82
    ));
    assert!(allowed(cluster, "10.0.0.2", "10.0.1.1", Protocol::TCP, 82));
}

#[test]
fn a_calico_deny_before_order_1000_overrides_a_kubernetes_allow() {
    let k8s = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-all, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{}]\n---\n";
    let deny = |order: &str| {
        policy(
            "NetworkPolicy",
            "deny-db",
            &format!("  order: {order}\n  selector: app == 'db'\n  ingress: [{{action: Deny}}]"),
        )
    };
    let before = load_policies(&format!("{k8s}{}", deny("999"))).unwrap();
    assert!(!allowed(before, "10.0.0.1", "10.0.0.2", Protocol::TCP, 80));
    let after = load_policies(&format!("{k8s}{}", deny("1001"))).unwrap();
    assert!(allowed(after, "10.0.0.1", "10.0.0.2", Protocol::TCP, 80));
}

#[test]
fn a_named_port_in_not_ports_excludes_the_number_it_stands_for_on_the_destination() {
    // Ingress: the destination is the selected pod; only `web` in x has a port named http (8080).
    let ingress = policy(
        "GlobalNetworkPolicy",
        "web-but-http",
        "  selector: app == 'web'\n  ingress: [{action: Allow, protocol: TCP, destination: {notPorts: [http]}}]",
    );
    let to = |address, port| {
        let cluster = load_policies(&ingress).unwrap();
        allowed(cluster, "10.0.0.2", address, Protocol::TCP, port)
    };
    assert!(!to("10.0.0.1", 8080));
    assert!(to("10.0.0.1", 80));
    assert!(to("10.0.1.1", 8080), "web in y has no port named http");

    // Egress: the destination is the peer; the name stands for 8080 on web in x only, and for
    // nothing on other pods or on addresses outside the cluster.
    let egress = policy(
        "GlobalNetworkPolicy",
        "db-out",
        "  selector: app == 'db'\n  egress: [{action: Allow, protocol: TCP, destination: {ports: [\"8000:9000\"], notPorts: [http]}}]",
    );
    let to = |address, port| {
        let cluster = load_policies(&egress).unwrap();
        allowed(cluster, "10.0.0.2", address, Protocol::TCP, port)
    };
    assert!(!to("10.0.0.1", 8080));
    assert!(to("10.0.0.1", 8081));
    assert!(to("10.0.1.1", 8080));
    assert!(to("192.0.2.1", 8080));
    assert!(!to("192.0.2.1", 9001));
}

#[test]
fn source_ports_match_the_packets_source_port_on_either_side() {
    // Ingress: the source is the peer. DNS answers come from port 53; `http` is web's 8080.
    let ingress = policy(
        "GlobalNetworkPolicy",
        "db-in",
        "  selector: app == 'db'\n  ingress:\n  - {action: Allow, protocol: UDP, source: {ports: [53]}}\n  - {action: Allow, protocol: TCP, source: {ports: [http], notPorts: [\"8000:8079\"]}, destination: {ports: [5432]}}",
    );
    let cluster = || load_policies(&ingress).unwrap();
    let from = |port, source_port| {
        allowed_from(
            cluster(),
            "10.0.0.1",
            "10.0.0.2",
            Protocol::UDP,
            port,
            source_port,
        )
    };
    assert!(from(40000, 53));
    assert!(!from(40000, 54));
    let tcp = |peer, source_port| {
        allowed_from(
            cluster(),
            peer,
            "10.0.0.2",
            Protocol::TCP,
            5432,
            source_port,
        )
    };
    assert!(tcp("10.0.0.1", 8080), "web's port named http");
    assert!(!tcp("10.0.0.1", 8081));
    assert!(!tcp("10.0.1.1", 8080), "web in y has no port named http");
    assert!(
        !tcp("192.0.2.1", 8080),
        "an address of no pod has no named port"
    );

    // Egress: the source is the selected pod itself; its own named port, less notPorts.
    let egress = policy(
        "GlobalNetworkPolicy",
        "web-out",
        "  selector: app == 'web'\n  egress:\n  - {action: Allow, protocol: TCP, source: {ports: [http]}}\n  - {action: Allow, protocol: UDP, source: {notPorts: [\"0:1023\"]}}",
    );
    let cluster = || load_policies(&egress).unwrap();
    let out = |from, protocol, source_port| {
        allowed_from(cluster(), from, "192.0.2.1", protocol, 443, source_port)
    };
    assert!(out("10.0.0.1", Protocol::TCP, 8080));
    assert!(!out("10.0.0.1", Protocol::TCP, 32768));
    assert!(
        !out("10.0.1.1", Protocol::TCP, 8080),
        "web in y has no port named http"
    );
    assert!(out("10.0.1.1", Protocol::UDP, 32768));
    assert!(!out("10.0.1.1", Protocol::UDP, 123));
}
