//! The plain manifests under config/ parse as the Kubernetes objects they claim to be, fit together
//! (service account, binding, probes, image), and grant the controller every permission its reconcile
//! uses — and no wildcard.

use std::path::Path;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::ServiceAccount,
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding},
};
use serde::Deserialize;

fn documents(file: &str) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config").join(file)).unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|d| serde_yaml::Value::deserialize(d).unwrap()).collect()
}

fn one<T: serde::de::DeserializeOwned>(file: &str, kind: &str) -> T {
    let doc = documents(file).into_iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind} in {file}"));
    serde_yaml::from_value(doc).unwrap_or_else(|e| panic!("{kind} in {file}: {e}"))
}

#[test]
fn deployment_runs_the_controller_as_its_service_account_with_probes() {
    let deploy: Deployment = one("deployment.yaml", "Deployment");
    let sa: ServiceAccount = one("rbac.yaml", "ServiceAccount");
    let binding: ClusterRoleBinding = one("rbac.yaml", "ClusterRoleBinding");
    let pod = deploy.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.service_account_name, sa.metadata.name);
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (Some(&subject.name), subject.namespace.as_ref()),
        (sa.metadata.name.as_ref(), sa.metadata.namespace.as_ref())
    );
    assert_eq!(deploy.metadata.namespace, sa.metadata.namespace);
    let c = &pod.containers[0];
    assert_eq!(c.args.as_ref().unwrap()[0], "controller");
    let env = c.env.as_ref().unwrap();
    let image = env.iter().find(|e| e.name == "OPERATOR_IMAGE").and_then(|e| e.value.clone());
    assert_eq!(image, c.image, "the agent's init containers use the operator's own image");
    let path =
        |p: &Option<k8s_openapi::api::core::v1::Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone();
    assert_eq!(path(&c.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(path(&c.readiness_probe).as_deref(), Some("/readyz"));
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080, "the controller listens on 8080 by default");
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!((sc.read_only_root_filesystem, sc.allow_privilege_escalation), (Some(true), Some(false)));
}

fn allows(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        r.api_groups.as_ref().is_some_and(|g| g.iter().any(|x| x == group))
            && r.resources.as_ref().is_some_and(|rs| rs.iter().any(|x| x == resource))
            && r.verbs.iter().any(|v| v == verb)
    })
}

fn no_wildcards(rules: &[PolicyRule]) {
    for r in rules {
        let everything = r.verbs.iter().chain(r.resources.iter().flatten()).chain(r.api_groups.iter().flatten());
        assert!(everything.into_iter().all(|x| x != "*"), "wildcard in {r:?}");
    }
}

#[test]
fn cluster_role_grants_what_the_reconcile_uses_and_no_wildcards() {
    let role: ClusterRole = one("rbac.yaml", "ClusterRole");
    let rules = role.rules.unwrap();
    let needed = [
        ("mysqlbackup.dev", "mysqlbackups", ["get", "list", "watch", "patch", "create", "delete"].as_slice()),
        ("mysqlbackup.dev", "backupschedules", &["get", "list", "watch"]),
        ("mysqlbackup.dev", "backupschedules/status", &["patch"]),
        ("mysqlbackup.dev", "mysqlbackups/status", &["patch"]),
        // Owner references with blockOwnerDeletion: Jobs owned by backups and restores, MySQLBackups and
        // prune Jobs owned by schedules.
        ("mysqlbackup.dev", "mysqlbackups/finalizers", &["update"]),
        ("mysqlbackup.dev", "mysqlrestores/finalizers", &["update"]),
        ("mysqlbackup.dev", "backupschedules/finalizers", &["update"]),
        ("mysqlbackup.dev", "mysqlrestores", &["get", "list", "watch"]),
        ("mysqlbackup.dev", "mysqlrestores/status", &["patch"]),
        ("batch", "jobs", &["get", "list", "watch", "create", "patch", "delete"]),
        ("", "pods", &["get", "list"]),
        ("", "persistentvolumeclaims", &["get", "create", "patch"]),
        ("", "secrets", &["get"]),
        ("events.k8s.io", "events", &["create", "patch"]),
    ];
    for (group, resource, verbs) in needed {
        for verb in verbs {
            assert!(allows(&rules, group, resource, verb), "ClusterRole lacks {verb} on {group}/{resource}");
        }
    }
    no_wildcards(&rules);
    assert!(!allows(&rules, "", "secrets", "list"), "Secrets are read one by one, never listed");
    assert!(
        !allows(&rules, "coordination.k8s.io", "leases", "patch"),
        "the Lease is written only in the operator's namespace"
    );
}

#[test]
fn leader_election_lease_is_granted_in_the_operators_namespace_only() {
    let role: Role = one("rbac.yaml", "Role");
    let binding: RoleBinding = one("rbac.yaml", "RoleBinding");
    let sa: ServiceAccount = one("rbac.yaml", "ServiceAccount");
    let rules = role.rules.unwrap();
    for verb in ["get", "create", "patch"] {
        assert!(allows(&rules, "coordination.k8s.io", "leases", verb), "Role lacks {verb} on leases");
    }
    no_wildcards(&rules);
    assert_eq!(role.metadata.namespace, sa.metadata.namespace);
    assert_eq!(binding.metadata.namespace, sa.metadata.namespace);
    assert_eq!((binding.role_ref.kind.as_str(), Some(&binding.role_ref.name)), ("Role", role.metadata.name.as_ref()));
    assert_eq!(binding.subjects.unwrap()[0].name, sa.metadata.name.unwrap());
    let deploy: Deployment = one("deployment.yaml", "Deployment");
    let env = deploy.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap();
    let from_field = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value_from.clone())
            .and_then(|v| v.field_ref)
            .map(|f| f.field_path)
    };
    assert_eq!(from_field("POD_NAME").as_deref(), Some("metadata.name"), "the identity in the Lease");
    assert_eq!(from_field("POD_NAMESPACE").as_deref(), Some("metadata.namespace"), "where the Lease lives");
}
