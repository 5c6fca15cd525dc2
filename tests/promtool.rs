//! The operator's files in `deploy/` hold: Prometheus' own `promtool` checks the alert rules and runs
//! their unit tests (`deploy/prometheus/alerts_test.yml`); every rule a node evaluates itself has its
//! Prometheus twin under the same name; and every metric the rules and the Grafana dashboard
//! (`deploy/grafana/insights.json`) query is one a node exports. `scripts/test.sh` installs Debian's
//! `prometheus` package for promtool.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root().join("deploy/prometheus"))
        .output()
        .expect("promtool runs: apt-get install prometheus (scripts/test.sh does)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The `insights_*` metric names in `text`, without the suffixes of a histogram's series.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("insights_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        names.insert(base.to_owned());
    }
    names
}

#[test]
fn the_alert_rules_pass_promtools_check_and_their_unit_tests() {
    let (ok, said) = promtool(&["check", "rules", "alerts.yml"]);
    assert!(ok && said.contains("SUCCESS"), "{said}");
    let (ok, said) = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(ok && said.contains("SUCCESS"), "{said}");
}

#[test]
fn every_rule_of_the_nodes_has_its_prometheus_twin_and_every_queried_metric_exists() {
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).unwrap();
    for rule in insights::domain::alert::SYSTEM_RULES {
        let name = insights::domain::alert::alert_name(rule);
        assert!(
            rules.contains(&format!("alert: {name}")),
            "{rule} ({name}) has no Prometheus rule"
        );
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("deploy/grafana/insights.json")).unwrap())
            .expect("the Grafana dashboard is JSON");
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10, "the panels an operator opens first");
    let mut exprs = String::new();
    for p in panels {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} queries something", p["title"]);
        for t in targets {
            exprs.push_str(t["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    // Every metric is declared in src/metrics.rs under its name without the registry's prefix.
    let declared = std::fs::read_to_string(root().join("src/metrics.rs")).unwrap();
    let used: BTreeSet<String> = metric_names(&rules)
        .union(&metric_names(&exprs))
        .cloned()
        .collect();
    assert!(used.len() >= 15, "{used:?}");
    for name in &used {
        let bare = name.strip_prefix("insights_").unwrap();
        assert!(
            declared.contains(&format!("\"{bare}\"")),
            "{name} is queried but no node exports it"
        );
    }
}
