//! End-to-end tests on a real cluster (the local one of `scripts/kube-local`, or kind), with the
//! operator installed by its Helm chart: backup and restore of a MariaDB StatefulSet with equal
//! checksums, `deletionPolicy: Delete`, a schedule's retention and an edited template; continuous
//! archiving and a point-in-time restore between marker rows, a binlog incremental; the leader's pod
//! killed mid-backup and the standby finishing it; bad resources next to a good one; the CRDs upgraded
//! in place over the previous release's.
//!
//! Ignored by default: they need a cluster. `e2e/run` starts the local cluster (or kind), installs the
//! chart and runs them with `E2E_KUBECONFIG` set (see e2e/README.md). Run by hand against any cluster
//! where the chart is installed:
//!
//! ```sh
//! E2E_KUBECONFIG=~/.kube/config cargo test --test e2e -- --ignored --nocapture
//! ```

use std::{fmt::Debug, time::Duration};

use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::{Deployment, StatefulSet},
        batch::v1::Job,
        coordination::v1::Lease,
        core::v1::{Event, Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config, Resource, ResourceExt,
    api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use mysql_backup_operator::crd::{
    BackupSchedule, MySQLBackup, MySQLBackupStatus, MySQLRestore, MySQLRestoreStatus, Phase,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The CRD upgrade test installs the previous release's CRDs for a while, which no other test may see:
/// it holds this for writing, every other test for reading.
static CRDS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The CRDs of the release before this one (`crds/crds.yaml` as last released).
const PREVIOUS_CRDS: &str = include_str!("fixtures/crds-previous.yaml");
const CURRENT_CRDS: &str = include_str!("../crds/crds.yaml");

/// Namespace of the operator's release (its Lease is there).
fn operator_namespace() -> String {
    std::env::var("E2E_OPERATOR_NAMESPACE").unwrap_or_else(|_| "mysql-backup-operator".into())
}

const SKIP: &str =
    "needs a Kubernetes cluster with the chart installed: run e2e/run, or set E2E_KUBECONFIG and pass --ignored";
const MARIADB_IMAGE: &str = "mariadb:10.11";
const PASSWORD: &str = "e2e-root-password";

async fn client() -> Client {
    let path =
        std::env::var("E2E_KUBECONFIG").unwrap_or_else(|_| panic!("E2E_KUBECONFIG is not set: this test {SKIP}"));
    let kubeconfig = Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("reading kubeconfig {path}: {e}"));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {path}: {e}"));
    mysql_backup_operator::controller::context::from_config(config).expect("a client")
}

/// A namespace for one test, deleted (with everything in it) when dropped.
struct TestNamespace {
    client: Client,
    name: String,
}

impl TestNamespace {
    async fn create(client: &Client, prefix: &str) -> Self {
        let name = format!("{prefix}-{}", std::process::id());
        let ns: Namespace = yaml(&format!("{{apiVersion: v1, kind: Namespace, metadata: {{name: {name}}}}}"));
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
        Self { client: client.clone(), name }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Applies an object server-side.
    async fn apply<K>(&self, obj: K) -> K
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
    {
        let name = obj.name_any();
        self.api::<K>()
            .patch(&name, &PatchParams::apply("e2e").force(), &Patch::Apply(&obj))
            .await
            .unwrap_or_else(|e| panic!("applying {} {name}: {e}", K::kind(&())))
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var("E2E_KEEP").is_ok() {
            eprintln!("E2E_KEEP is set: namespace {} kept", self.name);
            return;
        }
        let name = self.name.clone();
        // Best effort, on a runtime and with a client of its own: the test's client runs on the test's
        // runtime, which this thread blocks while it waits (a panicking test drops this inside it).
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let client = client().await;
                let _ = Api::<Namespace>::all(client).delete(&name, &DeleteParams::background()).await;
            });
        })
        .join();
    }
}

fn yaml<T: DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("fixture does not parse: {e}\n{text}"))
}

/// Polls `get` every two seconds until `done` holds, for at most `timeout`; on timeout panics with the
/// last object seen.
async fn wait_for<K, F>(api: &Api<K>, name: &str, timeout: Duration, what: &str, done: F) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug,
    F: Fn(&K) -> bool,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        if let Some(obj) = api.get_opt(name).await.unwrap_or_else(|e| panic!("reading {name}: {e}")) {
            if done(&obj) {
                return obj;
            }
            last = Some(obj);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    panic!("{name} did not become {what} within {timeout:?}; last seen:\n{last:#?}");
}

/// Waits until `name` no longer exists.
async fn wait_gone<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        match api.get_opt(name).await.unwrap_or_else(|e| panic!("reading {name}: {e}")) {
            None => return,
            Some(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
    let last = api.get_opt(name).await.ok().flatten();
    panic!("{name} still exists after {timeout:?}:\n{last:#?}");
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Runs `sql` with the `mariadb` client against `host` in a Job and returns what it printed.
async fn sql(ns: &TestNamespace, job: &str, host: &str, sql: &str) -> String {
    let container = serde_json::json!({
        "name": "sql", "image": MARIADB_IMAGE,
        "command": ["mariadb", "-h", host, "-uroot", "--batch", "--skip-column-names", "-e", sql],
        "env": [{"name": "MYSQL_PWD", "valueFrom": {"secretKeyRef": {"name": "db-root", "key": "password"}}}]
    });
    job_output(ns, job, container, serde_json::json!([])).await
}

/// Runs shell `script` in a Job with the `backups` claim (the root of `file:///backups/e2e`) mounted at
/// `/backups`, and returns what it printed.
async fn shell_on_backups(ns: &TestNamespace, job: &str, script: &str) -> String {
    let container = serde_json::json!({
        "name": "sh", "image": MARIADB_IMAGE, "command": ["sh", "-c", script],
        "securityContext": {"runAsUser": 999, "runAsGroup": 999},
        "volumeMounts": [{"name": "backups", "mountPath": "/backups", "readOnly": true}]
    });
    let volumes = serde_json::json!([{"name": "backups", "persistentVolumeClaim": {"claimName": "backups"}}]);
    job_output(ns, job, container, volumes).await
}

/// Runs a Job of one pod with `container` and `volumes`, and returns what the pod that succeeded
/// printed; the Job must succeed.
async fn job_output(ns: &TestNamespace, job: &str, container: serde_json::Value, volumes: serde_json::Value) -> String {
    let manifest = serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job},
        "spec": {"backoffLimit": 6, "template": {"spec": {
            "restartPolicy": "Never", "containers": [container], "volumes": volumes
        }}}
    });
    ns.apply::<Job>(serde_json::from_value(manifest).expect("a Job")).await;
    let jobs = ns.api::<Job>();
    let finished = wait_for(&jobs, job, Duration::from_secs(300), "finished", |j| {
        let conditions = j.status.as_ref().and_then(|s| s.conditions.as_ref());
        conditions
            .is_some_and(|cs| cs.iter().any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True"))
    })
    .await;
    let pods = ns.api::<Pod>().list(&ListParams::default().labels(&format!("job-name={job}"))).await.expect("pods");
    let mut out = String::new();
    for pod in pods.items {
        let logs = ns.api::<Pod>().logs(&pod.name_any(), &LogParams::default()).await.unwrap_or_default();
        if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded") {
            out = logs;
        }
    }
    assert!(finished.status.and_then(|s| s.succeeded).unwrap_or(0) > 0, "Job {job} failed");
    out
}

/// Starts the MariaDB StatefulSet `db` (pod `db-0`, root password in Secret `db-root`) and the claim
/// `backups` that the tests store on (file://, so they need no object store), and waits until the
/// server is ready.
async fn start_database(ns: &TestNamespace) {
    start_database_with(ns, &[]).await;
}

/// [`start_database`] with more server arguments.
async fn start_database_with(ns: &TestNamespace, server_args: &[&str]) {
    eprintln!("namespace {}", ns.name);
    let secret: Secret = yaml(&format!(
        "{{apiVersion: v1, kind: Secret, metadata: {{name: db-root}}, stringData: {{password: {PASSWORD}}}}}"
    ));
    ns.apply(secret).await;
    ns.apply::<Service>(yaml(
        "{apiVersion: v1, kind: Service, metadata: {name: db}, spec: {clusterIP: None, selector: {app: db}, ports: [{port: 3306}]}}",
    ))
    .await;
    let args = ["--log-bin=mysql-bin", "--server-id=1", "--binlog-format=ROW"].iter().chain(server_args).copied();
    let db = DB.replace(
        "args: [--log-bin=mysql-bin, --server-id=1, --binlog-format=ROW]",
        &format!("args: [{}]", args.collect::<Vec<_>>().join(", ")),
    );
    ns.apply::<StatefulSet>(yaml(&db)).await;
    ns.apply::<PersistentVolumeClaim>(yaml(
        "{apiVersion: v1, kind: PersistentVolumeClaim, metadata: {name: backups}, spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 2Gi}}}}",
    ))
    .await;
    wait_for(&ns.api::<Pod>(), "db-0", Duration::from_secs(300), "ready", pod_ready).await;
}

/// What every test but the CRD upgrade starts with: the shared hold on the CRDs, a namespace of its
/// own and the MariaDB StatefulSet running in it.
async fn with_database(prefix: &str) -> (tokio::sync::RwLockReadGuard<'static, ()>, TestNamespace) {
    let crds = CRDS.read().await;
    let ns = TestNamespace::create(&client().await, prefix).await;
    start_database(&ns).await;
    (crds, ns)
}

/// Whether a MySQLBackup or MySQLRestore has finished, one way or the other.
fn finished(phase: Option<Phase>) -> bool {
    phase.is_some_and(|p| matches!(p, Phase::Complete | Phase::Failed))
}

/// Waits up to 10 minutes until MySQLBackup `name` has finished, one way or the other; its status.
async fn backup_finished(ns: &TestNamespace, name: &str) -> MySQLBackupStatus {
    let done = |b: &MySQLBackup| finished(b.status.as_ref().and_then(|s| s.phase));
    let backup = wait_for(&ns.api::<MySQLBackup>(), name, Duration::from_secs(600), "finished", done).await;
    backup.status.expect("a status")
}

/// Waits up to 10 minutes until MySQLRestore `name` has finished, one way or the other; its status.
async fn restore_finished(ns: &TestNamespace, name: &str) -> MySQLRestoreStatus {
    let done = |r: &MySQLRestore| finished(r.status.as_ref().and_then(|s| s.phase));
    let restore = wait_for(&ns.api::<MySQLRestore>(), name, Duration::from_secs(600), "finished", done).await;
    restore.status.expect("a status")
}

/// Starts a MariaDB pod `name` on the claim `claim` and returns its IP once it is ready.
async fn start_server_on(ns: &TestNamespace, name: &str, claim: &str) -> String {
    start_server_with_on(ns, name, claim, &[]).await
}

/// [`start_server_on`] with server arguments.
async fn start_server_with_on(ns: &TestNamespace, name: &str, claim: &str, server_args: &[&str]) -> String {
    let args = server_args.join(", ");
    ns.apply::<Pod>(yaml(&format!(
        "{{apiVersion: v1, kind: Pod, metadata: {{name: {name}, labels: {{app: {name}}}}}, spec: {{securityContext: {{runAsUser: 999, runAsGroup: 999, fsGroup: 999}}, containers: [{{name: mariadb, image: '{MARIADB_IMAGE}', args: [{args}], env: [{{name: MARIADB_ROOT_PASSWORD, valueFrom: {{secretKeyRef: {{name: db-root, key: password}}}}}}], readinessProbe: {{exec: {{command: [healthcheck.sh, --connect, --innodb_initialized]}}, periodSeconds: 3}}, volumeMounts: [{{name: data, mountPath: /var/lib/mysql}}]}}], volumes: [{{name: data, persistentVolumeClaim: {{claimName: {claim}}}}}]}}}}"
    )))
    .await;
    let pod = wait_for(&ns.api::<Pod>(), name, Duration::from_secs(300), "ready", pod_ready).await;
    pod.status.and_then(|s| s.pod_ip).expect("an IP")
}

const DB: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      securityContext: {runAsUser: 999, runAsGroup: 999, fsGroup: 999}
      containers:
      - name: mariadb
        image: mariadb:10.11
        args: [--log-bin=mysql-bin, --server-id=1, --binlog-format=ROW]
        env:
        - name: MARIADB_ROOT_PASSWORD
          valueFrom: {secretKeyRef: {name: db-root, key: password}}
        ports: [{containerPort: 3306, name: mysql}]
        readinessProbe:
          exec: {command: [healthcheck.sh, --connect, --innodb_initialized]}
          periodSeconds: 3
        volumeMounts: [{name: data, mountPath: /var/lib/mysql}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 2Gi}}}
"#;

const LOAD: &str = "CREATE DATABASE app; USE app; \
    CREATE TABLE app.accounts (id INT PRIMARY KEY, owner VARCHAR(64), balance DECIMAL(12,2)) ENGINE=InnoDB; \
    INSERT INTO app.accounts SELECT seq, CONCAT('owner-', seq), seq * 1.25 FROM seq_1_to_20000; \
    CREATE TABLE app.events (id BIGINT AUTO_INCREMENT PRIMARY KEY, body TEXT) ENGINE=InnoDB; \
    INSERT INTO app.events (body) SELECT REPEAT(MD5(seq), 8) FROM seq_1_to_5000;";

const CHECKSUMS: &str = "CHECKSUM TABLE app.accounts, app.events; SELECT COUNT(*) FROM app.accounts;";

#[path = "suite/data.rs"]
mod data;
#[path = "suite/drills.rs"]
mod drills;
#[path = "suite/operator.rs"]
mod operator;
