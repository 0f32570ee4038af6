//! The Helm chart grants exactly what the plain manifests under config/ grant (which tests/manifests.rs
//! checks against what the reconcile uses), and runs the controller the same way. No Helm renderer
//! exists here, so the templates are read with every `{{ … }}` action blanked out: the parts compared
//! (RBAC rules, container wiring) are literal YAML in the templates. `scripts/lint-chart` renders them
//! with Helm's linter.

use std::path::Path;

use serde::Deserialize;
use serde_yaml::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The YAML documents of a file, with template-only lines dropped and inline actions replaced by `T`.
fn blanked(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("{{") && trimmed.ends_with("}}") {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            out.push('T');
            rest = rest[start..].find("}}").map(|end| &rest[start + end + 2..]).unwrap_or("");
        }
        out.push_str(rest);
        out.push('\n');
    }
    serde_yaml::Deserializer::from_str(&out)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn by_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn chart_rbac_rules_equal_the_plain_manifests() {
    let chart = blanked("charts/mysql-backup-operator/templates/rbac.yaml");
    let plain = blanked("config/rbac.yaml");
    for kind in ["ClusterRole", "Role"] {
        assert_eq!(by_kind(&chart, kind)["rules"], by_kind(&plain, kind)["rules"], "{kind} rules differ");
    }
    assert_eq!(by_kind(&chart, "ClusterRoleBinding")["roleRef"]["kind"], "ClusterRole");
    assert_eq!(by_kind(&chart, "RoleBinding")["roleRef"]["kind"], "Role");
}

#[test]
fn chart_runs_the_controller_like_the_plain_manifests() {
    let chart = blanked("charts/mysql-backup-operator/templates/deployment.yaml");
    let plain = blanked("config/deployment.yaml");
    let pod = |docs: &[Value]| by_kind(docs, "Deployment")["spec"]["template"]["spec"].clone();
    let (chart, plain) = (pod(&chart), pod(&plain));
    assert_eq!(chart["securityContext"], plain["securityContext"]);
    let (c, p) = (&chart["containers"][0], &plain["containers"][0]);
    for field in ["ports", "livenessProbe", "readinessProbe", "securityContext"] {
        assert_eq!(c[field], p[field], "container {field} differs");
    }
    let env_names = |v: &Value| -> Vec<String> {
        v["env"].as_sequence().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(env_names(c), env_names(p));
    assert_eq!(c["args"][0], "controller");
}

#[test]
fn chart_version_follows_the_crate_and_uses_the_same_image() {
    let chart: Value = serde_yaml::from_str(
        &std::fs::read_to_string(Path::new(ROOT).join("charts/mysql-backup-operator/Chart.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(chart["appVersion"].as_str(), Some(env!("CARGO_PKG_VERSION")));
    let values: Value = serde_yaml::from_str(
        &std::fs::read_to_string(Path::new(ROOT).join("charts/mysql-backup-operator/values.yaml")).unwrap(),
    )
    .unwrap();
    let plain = blanked("config/deployment.yaml");
    let image = by_kind(&plain, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(format!("{}:{}", values["image"]["repository"].as_str().unwrap(), env!("CARGO_PKG_VERSION")), image);
}

#[test]
fn alert_rules_use_metrics_the_controller_exports() {
    use mysql_backup_operator::controller::metrics::{Metrics, ScheduleLabels};
    use mysql_backup_operator::crd::BackupScheduleStatus;
    let metrics = Metrics::default();
    let status: BackupScheduleStatus = serde_json::from_value(serde_json::json!({
        "lastSuccessfulBackup": {"name": "db-nightly-20261122-0200", "time": "2026-11-22T02:10:00Z"},
        "recoverabilityWindow": {"from": "2026-11-01T02:10:00Z", "to": "2026-11-22T02:10:00Z"},
        "missedSlots": 2
    }))
    .unwrap();
    metrics.record_schedule(ScheduleLabels { namespace: "db".into(), schedule: "db-nightly".into() }, &status);
    let source =
        mysql_backup_operator::controller::metrics::SourceLabels { namespace: "db".into(), pod: "db-0".into() };
    metrics.drill_failures.get_or_create(&source).inc();
    metrics.drill_last_success.get_or_create(&source).set(1_795_313_400.0);
    let exported = metrics.encode();
    for line in [
        "mysql_backup_operator_schedule_last_success_timestamp_seconds{namespace=\"db\",schedule=\"db-nightly\"} 1795313400.0",
        "mysql_backup_operator_recoverability_window_start_timestamp_seconds{namespace=\"db\",schedule=\"db-nightly\"} 1793499000.0",
        "mysql_backup_operator_schedule_missed_slots{namespace=\"db\",schedule=\"db-nightly\"} 2",
        "mysql_backup_operator_drill_failures_total{namespace=\"db\",pod=\"db-0\"} 1",
        "mysql_backup_operator_drill_last_success_timestamp_seconds{namespace=\"db\",pod=\"db-0\"} 1795313400.0",
    ] {
        assert!(exported.contains(line), "{line} not in:\n{exported}");
    }
    let since = exported
        .lines()
        .find(|l| l.starts_with("mysql_backup_operator_schedule_seconds_since_last_success{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("seconds since the last success");
    let expected = k8s_openapi::jiff::Timestamp::now().as_second() as f64 - 1_795_313_400.0;
    assert!((since - expected).abs() < 60.0, "{since} vs {expected}");

    let rules = blanked("charts/mysql-backup-operator/templates/prometheusrule.yaml");
    let groups = &by_kind(&rules, "PrometheusRule")["spec"]["groups"];
    let exprs: Vec<&str> =
        groups[0]["rules"].as_sequence().unwrap().iter().map(|r| r["expr"].as_str().unwrap()).collect();
    assert_eq!(exprs.len(), 3, "two alerts, and the opt-in drill alert");
    for expr in exprs {
        let metric = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .find(|w| w.starts_with("mysql_backup_operator_"))
            .unwrap();
        assert!(
            exported.contains(&format!("{metric}{{")),
            "the alert uses {metric}, which the controller does not export"
        );
    }
}
