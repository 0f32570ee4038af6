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
