//! Realistic names and labels shared by the generators: ~1000 application names, their tiers and
//! the container ports such applications expose.

use policy::Protocol;

const PREFIXES: [&str; 20] = [
    "cart",
    "catalog",
    "payments",
    "search",
    "auth",
    "user",
    "inventory",
    "shipping",
    "billing",
    "notification",
    "recommendation",
    "review",
    "ads",
    "email",
    "currency",
    "fraud",
    "ledger",
    "report",
    "analytics",
    "media",
];

const SUFFIXES: [&str; 10] = [
    "api", "worker", "web", "db", "cache", "queue", "cron", "gateway", "proxy", "sync",
];

/// Number of distinct application names [`app`] produces.
pub const APPS: usize = PREFIXES.len() * SUFFIXES.len() * 5;

/// Application `i` (taken modulo [`APPS`]): `payments-api`, `payments-api-2`, …
pub fn app(i: usize) -> String {
    let i = i % APPS;
    let prefix = PREFIXES[i % PREFIXES.len()];
    let suffix = SUFFIXES[i / PREFIXES.len() % SUFFIXES.len()];
    match i / (PREFIXES.len() * SUFFIXES.len()) {
        0 => format!("{prefix}-{suffix}"),
        v => format!("{prefix}-{suffix}-{v}"),
    }
}

fn suffix(app: &str) -> &str {
    SUFFIXES
        .iter()
        .find(|s| app.split('-').nth(1) == Some(**s))
        .copied()
        .unwrap_or("api")
}

/// The `tier` label an application of this kind carries.
pub fn tier(app: &str) -> &'static str {
    match suffix(app) {
        "web" => "frontend",
        "api" | "gateway" | "proxy" => "backend",
        "db" | "cache" | "queue" => "data",
        _ => "batch",
    }
}

/// Container ports by name: `(name, protocol, number)`.
pub type NamedPorts = &'static [(&'static str, Protocol, u16)];

/// The named container ports an application of this kind declares.
pub fn named_ports(app: &str) -> NamedPorts {
    const WEB: &[(&str, Protocol, u16)] = &[
        ("http", Protocol::TCP, 8080),
        ("metrics", Protocol::TCP, 9090),
    ];
    const API: &[(&str, Protocol, u16)] = &[
        ("http", Protocol::TCP, 8080),
        ("grpc", Protocol::TCP, 9000),
        ("metrics", Protocol::TCP, 9090),
    ];
    const DB: &[(&str, Protocol, u16)] = &[
        ("db", Protocol::TCP, 5432),
        ("metrics", Protocol::TCP, 9187),
    ];
    const CACHE: &[(&str, Protocol, u16)] = &[("redis", Protocol::TCP, 6379)];
    const BATCH: &[(&str, Protocol, u16)] = &[("metrics", Protocol::TCP, 9090)];
    match suffix(app) {
        "web" | "gateway" | "proxy" => WEB,
        "api" => API,
        "db" => DB,
        "cache" | "queue" => CACHE,
        _ => BATCH,
    }
}

/// Team label values of tenant namespaces (`team-00` … `team-19`).
pub fn team(i: usize) -> String {
    format!("team-{:02}", i % 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_are_distinct_and_valid_label_values() {
        let all: std::collections::BTreeSet<String> = (0..APPS).map(app).collect();
        assert_eq!(all.len(), APPS);
        assert!(all
            .iter()
            .all(|a| a.len() <= 63 && !a.starts_with("checkout")));
        assert_eq!(tier("payments-web-3"), "frontend");
        assert_eq!(tier("ledger-db"), "data");
    }
}
