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
    let manifest = serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job},
        "spec": {"backoffLimit": 6, "template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "sql", "image": MARIADB_IMAGE,
            "command": ["mariadb", "-h", host, "-uroot", "--batch", "--skip-column-names", "-e", sql],
            "env": [{"name": "MYSQL_PWD", "valueFrom": {"secretKeyRef": {"name": "db-root", "key": "password"}}}]
        }]}}}
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
    assert!(finished.status.and_then(|s| s.succeeded).unwrap_or(0) > 0, "SQL Job {job} failed");
    out
}

/// Starts the MariaDB StatefulSet `db` (pod `db-0`, root password in Secret `db-root`) and the claim
/// `backups` that the tests store on (file://, so they need no object store), and waits until the
/// server is ready.
async fn start_database(ns: &TestNamespace) {
    eprintln!("namespace {}", ns.name);
    let secret: Secret = yaml(&format!(
        "{{apiVersion: v1, kind: Secret, metadata: {{name: db-root}}, stringData: {{password: {PASSWORD}}}}}"
    ));
    ns.apply(secret).await;
    ns.apply::<Service>(yaml(
        "{apiVersion: v1, kind: Service, metadata: {name: db}, spec: {clusterIP: None, selector: {app: db}, ports: [{port: 3306}]}}",
    ))
    .await;
    ns.apply::<StatefulSet>(yaml(DB)).await;
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
    ns.apply::<Pod>(yaml(&format!(
        "{{apiVersion: v1, kind: Pod, metadata: {{name: {name}, labels: {{app: {name}}}}}, spec: {{securityContext: {{runAsUser: 999, runAsGroup: 999, fsGroup: 999}}, containers: [{{name: mariadb, image: '{MARIADB_IMAGE}', env: [{{name: MARIADB_ROOT_PASSWORD, valueFrom: {{secretKeyRef: {{name: db-root, key: password}}}}}}], readinessProbe: {{exec: {{command: [healthcheck.sh, --connect, --innodb_initialized]}}, periodSeconds: 3}}, volumeMounts: [{{name: data, mountPath: /var/lib/mysql}}]}}], volumes: [{{name: data, persistentVolumeClaim: {{claimName: {claim}}}}}]}}}}"
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

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/run, or set E2E_KUBECONFIG and pass --ignored"]
async fn backup_a_statefulset_restore_into_a_new_claim_and_compare_checksums() {
    let (_crds, ns) = with_database("e2e-backup").await;
    sql(&ns, "load", "db-0.db", LOAD).await;
    let source = sql(&ns, "checksum-source", "db-0.db", CHECKSUMS).await;
    assert!(source.contains("app.accounts") && source.contains("20000"), "unexpected source checksums:\n{source}");

    // Back up through the operator and read the result from the status.
    let storage = "{url: 'file:///backups/e2e', persistentVolumeClaim: backups}";
    ns.apply::<MySQLBackup>(yaml(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLBackup, metadata: {{name: first}}, spec: {{source: {{pod: db-0, connection: {{user: root, passwordSecret: {{name: db-root, key: password}}}}}}, method: mariabackup, storage: {storage}}}}}"
    )))
    .await;
    let backups = ns.api::<MySQLBackup>();
    let status = backup_finished(&ns, "first").await;
    assert_eq!(status.phase, Some(Phase::Complete), "backup failed: {:#?}", status.conditions);
    assert!(status.backup_id.is_some() && status.manifest.is_some());
    let positions = status.positions.expect("positions");
    assert!(positions.gtid_executed.as_deref().is_some_and(|g| g.starts_with("0-1-")), "{positions:?}");
    assert!(positions.binlog_file.as_deref().is_some_and(|f| f.starts_with("mysql-bin.")), "{positions:?}");
    assert!(status.sizes.expect("sizes").data_bytes > 0);

    // Restore into a new claim, then start a server on it.
    ns.apply::<MySQLRestore>(yaml(
        "{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLRestore, metadata: {name: again}, spec: {source: {backup: first}, target: {volumeClaimTemplate: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 2Gi}}}}, securityContext: {runAsUser: 999, runAsGroup: 999, fsGroup: 999}}}",
    ))
    .await;
    let rs = restore_finished(&ns, "again").await;
    assert_eq!(rs.phase, Some(Phase::Complete), "restore failed: {:#?}", rs.conditions);
    assert_eq!(rs.positions.and_then(|p| p.gtid_executed), positions.gtid_executed);
    let claim = rs.persistent_volume_claim.expect("the restored claim");
    let ip = start_server_on(&ns, "restored", &claim).await;
    let copy = sql(&ns, "checksum-restored", &ip, CHECKSUMS).await;
    assert_eq!(copy, source, "checksums of the restored server differ from the source's");

    // deletionPolicy Delete: deleting the object deletes the data, then the object goes.
    ns.apply::<MySQLBackup>(yaml(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLBackup, metadata: {{name: doomed}}, spec: {{source: {{pod: db-0, connection: {{user: root, passwordSecret: {{name: db-root, key: password}}}}}}, method: mariabackup, deletionPolicy: Delete, storage: {storage}}}}}"
    )))
    .await;
    assert_eq!(backup_finished(&ns, "doomed").await.phase, Some(Phase::Complete));
    let doomed = backups.get("doomed").await.expect("the backup");
    assert!(doomed.finalizers().iter().any(|f| f == "mysqlbackup.dev/delete-data"), "{:?}", doomed.finalizers());
    backups.delete("doomed", &DeleteParams::default()).await.expect("delete");
    wait_gone(&backups, "doomed", Duration::from_secs(300)).await;
    let cleanup = ns.api::<Job>().get("cleanup-doomed").await.expect("the cleanup Job is kept for an hour");
    assert_eq!(cleanup.status.and_then(|s| s.succeeded), Some(1));
    // The first backup is untouched: a second restore of it still completes.
    ns.apply::<MySQLRestore>(yaml(
        "{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLRestore, metadata: {name: after-delete}, spec: {source: {backup: first}, target: {volumeClaimTemplate: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 2Gi}}}}, securityContext: {runAsUser: 999, runAsGroup: 999, fsGroup: 999}}}",
    ))
    .await;
    assert_eq!(restore_finished(&ns, "after-delete").await.phase, Some(Phase::Complete));

    // A schedule every minute keeping one backup: after two successes the prune Job deletes the older
    // backup and its MySQLBackup; the schedule's status reports the window and its last success.
    ns.apply::<BackupSchedule>(yaml(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: BackupSchedule, metadata: {{name: every-minute}}, spec: {{schedule: '* * * * *', retention: {{keepLast: 1}}, backupTemplate: {{source: {{pod: db-0, connection: {{user: root, passwordSecret: {{name: db-root, key: password}}}}}}, method: mariabackup, storage: {storage}}}}}}}"
    )))
    .await;
    let schedules = ns.api::<BackupSchedule>();
    let pruned = wait_for(&schedules, "every-minute", Duration::from_secs(900), "pruned once", |s: &BackupSchedule| {
        s.status
            .as_ref()
            .and_then(|st| st.last_prune.as_ref())
            .is_some_and(|p| p.phase == Phase::Complete && p.deleted >= 1)
    })
    .await;
    let st = pruned.status.expect("a status");
    assert!(st.last_successful_backup.and_then(|b| b.positions).and_then(|p| p.gtid_executed).is_some());
    assert!(st.recoverability_window.is_some());
    // The template can be edited (its type is also MySQLBackup's spec, which cannot): the next backup
    // of the schedule carries the change.
    let edited = ns
        .apply::<BackupSchedule>(yaml(&format!(
            "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: BackupSchedule, metadata: {{name: every-minute}}, spec: {{schedule: '* * * * *', retention: {{keepLast: 1}}, backupTemplate: {{source: {{pod: db-0, connection: {{user: root, passwordSecret: {{name: db-root, key: password}}}}}}, method: mariabackup, storage: {storage}, job: {{backoffLimit: 2}}}}}}}}"
        )))
        .await;
    let edited_at = edited.metadata.generation;
    assert!(edited_at > pruned.metadata.generation, "the template edit made a new generation");
    let children_api = ns.api::<MySQLBackup>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let children = children_api
            .list(&ListParams::default().labels("mysqlbackup.dev/schedule=every-minute"))
            .await
            .expect("children");
        if children.items.iter().any(|b| b.spec.job.backoff_limit == Some(2)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no backup of the edited template within 3 minutes");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    ns.apply::<BackupSchedule>(yaml(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: BackupSchedule, metadata: {{name: every-minute}}, spec: {{suspend: true, schedule: '* * * * *', retention: {{keepLast: 1}}, backupTemplate: {{source: {{pod: db-0, connection: {{user: root, passwordSecret: {{name: db-root, key: password}}}}}}, method: mariabackup, storage: {storage}}}}}}}"
    )))
    .await;
    let children = ns
        .api::<MySQLBackup>()
        .list(&ListParams::default().labels("mysqlbackup.dev/schedule=every-minute"))
        .await
        .expect("children");
    let complete =
        children.items.iter().filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(Phase::Complete)).count();
    assert!(complete <= 2, "retention keeps one complete backup (plus one that may just have finished): {complete}");
}

/// The markers the archiving test writes, one transaction each.
const MARKERS: &str = "CREATE DATABASE app; CREATE TABLE app.marks (id INT PRIMARY KEY) ENGINE=InnoDB;";

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/run, or set E2E_KUBECONFIG and pass --ignored"]
async fn archive_binary_logs_continuously_and_restore_to_a_gtid_between_markers() {
    let (_crds, ns) = with_database("e2e-archive").await;
    sql(&ns, "markers", "db-0.db", MARKERS).await;
    let storage = "{url: 'file:///backups/e2e', persistentVolumeClaim: backups}";
    let source = "{pod: db-0, connection: {user: root, passwordSecret: {name: db-root, key: password}}}";

    // A full backup to start from, then a schedule that only archives during the test (its backups
    // are yearly), with 2-second segments.
    ns.apply::<MySQLBackup>(yaml(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLBackup, metadata: {{name: base}}, spec: {{source: {source}, method: mariabackup, storage: {storage}}}}}"
    )))
    .await;
    assert_eq!(backup_finished(&ns, "base").await.phase, Some(Phase::Complete));
    ns.apply::<BackupSchedule>(yaml(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: BackupSchedule, metadata: {{name: archived}}, spec: {{schedule: '0 0 1 1 *', binlogArchive: {{segmentSeconds: 2}}, backupTemplate: {{source: {source}, method: mariabackup, storage: {storage}}}}}}}"
    )))
    .await;
    let schedules = ns.api::<BackupSchedule>();
    let streaming = |s: &BackupSchedule| {
        s.status.as_ref().and_then(|st| st.binlog_archive.as_ref()).is_some_and(|a| a.phase == "Streaming")
    };
    let st = wait_for(&schedules, "archived", Duration::from_secs(300), "streaming", streaming).await;
    let archive = st.status.and_then(|s| s.binlog_archive).expect("the archive's status").archive;
    assert_eq!(archive, format!("{}.archived", ns.name));

    // Four markers, one transaction each; the position after the second is the target.
    let out = sql(
        &ns,
        "write-markers",
        "db-0.db",
        "INSERT INTO app.marks VALUES (1); INSERT INTO app.marks VALUES (2); SELECT @@gtid_binlog_pos; \
         INSERT INTO app.marks VALUES (3); INSERT INTO app.marks VALUES (4); SELECT @@gtid_binlog_pos;",
    )
    .await;
    let positions: Vec<&str> = out.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let [target, last] = positions[..] else { panic!("expected two positions, got:\n{out}") };

    // The schedule's status reaches the last marker within seconds, with no gap.
    let caught_up = |s: &BackupSchedule| {
        s.status
            .as_ref()
            .and_then(|st| st.binlog_archive.as_ref())
            .is_some_and(|a| a.archived_position.as_deref() == Some(last))
    };
    let st = wait_for(&schedules, "archived", Duration::from_secs(120), "caught up", caught_up).await;
    let status = st.status.and_then(|s| s.binlog_archive).expect("the archive's status");
    assert_eq!((status.gaps, status.last_gap), (0, None));
    assert!(status.last_event_time.is_some());

    // Restore to the second marker: the base backup, then the archive's segments up to it.
    ns.apply::<MySQLRestore>(yaml(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLRestore, metadata: {{name: to-second}}, spec: {{source: {{backup: base}}, pointInTime: {{gtid: '{target}', archive: '{archive}'}}, target: {{volumeClaimTemplate: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 2Gi}}}}}}}}, securityContext: {{runAsUser: 999, runAsGroup: 999, fsGroup: 999}}}}}}"
    )))
    .await;
    let rs = restore_finished(&ns, "to-second").await;
    assert_eq!(rs.phase, Some(Phase::Complete), "restore failed: {:#?}", rs.conditions);
    assert_eq!(rs.positions.and_then(|p| p.gtid_executed).as_deref(), Some(target));
    let replayed = rs.replayed.expect("what was replayed");
    assert_eq!(replayed.transactions, 2, "{replayed:?}");
    assert_eq!(replayed.archive.as_deref(), Some(archive.as_str()));
    assert!(replayed.segments >= 1 && replayed.gaps_crossed.is_empty(), "{replayed:?}");
    let ip = start_server_on(&ns, "at-second", &rs.persistent_volume_claim.expect("the restored claim")).await;
    let rows = sql(&ns, "rows-at-second", &ip, "SELECT GROUP_CONCAT(id ORDER BY id) FROM app.marks;").await;
    assert_eq!(rows.trim(), "1,2");

    // A binlog incremental after the base backup ends at the last marker (taken after the restore,
    // which would otherwise replay it instead of the archive).
    ns.apply::<MySQLBackup>(yaml(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLBackup, metadata: {{name: incr}}, spec: {{source: {source}, method: binlog, storage: {storage}}}}}"
    )))
    .await;
    let incr = backup_finished(&ns, "incr").await;
    assert_eq!(incr.phase, Some(Phase::Complete), "incremental failed: {:#?}", incr.conditions);
    assert_eq!(incr.method.as_deref(), Some("binlog"));
    let base_id = ns.api::<MySQLBackup>().get("base").await.expect("base").status.and_then(|s| s.backup_id);
    assert_eq!(incr.incremental.and_then(|i| i.base_backup_id), base_id);
    assert_eq!(incr.positions.and_then(|p| p.gtid_executed).as_deref(), Some(last));

    // Removing binlogArchive stops the archiver: its Deployment goes.
    ns.apply::<BackupSchedule>(yaml(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: BackupSchedule, metadata: {{name: archived}}, spec: {{schedule: '0 0 1 1 *', backupTemplate: {{source: {source}, method: mariabackup, storage: {storage}}}}}}}"
    )))
    .await;
    wait_gone(&ns.api::<Deployment>(), "archiver-archived", Duration::from_secs(120)).await;
}

/// Applies every CRD in `text` server-side and waits until each is established and served with its
/// new schema (the API server takes a moment to switch).
async fn apply_crds(client: &Client, text: &str) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for doc in serde_yaml::Deserializer::from_str(text) {
        let crd = CustomResourceDefinition::deserialize(doc).expect("a CRD");
        let name = crd.name_any();
        api.patch(&name, &PatchParams::apply("e2e-crds").force(), &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        wait_for(&api, &name, Duration::from_secs(60), "established", |c: &CustomResourceDefinition| {
            c.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
        })
        .await;
    }
}

/// Merge-patches a MySQLBackup's spec; returns the API server's refusal, if any.
async fn patch_spec(api: &Api<MySQLBackup>, name: &str, spec: serde_json::Value) -> Result<MySQLBackup, String> {
    api.patch(name, &PatchParams::default(), &Patch::Merge(serde_json::json!({ "spec": spec })))
        .await
        .map_err(|e| e.to_string())
}

/// Retries `patch_spec` for up to 30 s until it succeeds (the API server switches schemas lazily).
async fn patch_spec_eventually(api: &Api<MySQLBackup>, name: &str, spec: serde_json::Value) -> MySQLBackup {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match patch_spec(api, name, spec.clone()).await {
            Ok(b) => return b,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("patch refused, retrying: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("patching {name} with {spec}: {e}"),
        }
    }
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/run, or set E2E_KUBECONFIG and pass --ignored"]
async fn crds_upgrade_in_place_over_the_previous_release() {
    let _only = CRDS.write().await;
    let client = client().await;
    apply_crds(&client, PREVIOUS_CRDS).await;
    let ns = TestNamespace::create(&client, "e2e-upgrade").await;
    // An object written under the previous release's CRDs.
    ns.apply::<MySQLBackup>(yaml(
        "{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLBackup, metadata: {name: kept}, spec: {source: {pod: gone-0}, method: mariabackup, storage: {url: 's3://bucket/prefix'}}}",
    ))
    .await;
    let api = ns.api::<MySQLBackup>();
    // The previous release kept the whole spec immutable (the bug this release fixes).
    let old = patch_spec(&api, "kept", serde_json::json!({"deletionPolicy": "Delete"})).await.expect_err("refused");
    assert!(old.contains("spec is immutable: create a new MySQLBackup"), "{old}");

    apply_crds(&client, CURRENT_CRDS).await;
    // The object is still served and reconciled: blocked on its missing pod, with a Warning.
    let blocked = wait_for(&api, "kept", Duration::from_secs(120), "blocked", |b: &MySQLBackup| {
        b.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Blocked" && c.status == "True"))
    })
    .await;
    let c = blocked.status.expect("a status").conditions.into_iter().find(|c| c.type_ == "Blocked").expect("Blocked");
    assert_eq!(
        (c.reason.as_str(), c.message.as_str()),
        ("PodNotFound", &*format!("pod gone-0 not found in namespace {}", ns.name))
    );
    // Now deletionPolicy can change, and the finalizer follows it; the rest of the spec cannot.
    patch_spec_eventually(&api, "kept", serde_json::json!({"deletionPolicy": "Delete"})).await;
    let err = patch_spec(&api, "kept", serde_json::json!({"method": "cold"})).await.expect_err("refused");
    assert!(err.contains("spec is immutable except deletionPolicy: create a new MySQLBackup"), "{err}");
    wait_for(&api, "kept", Duration::from_secs(60), "finalized", |b: &MySQLBackup| {
        b.finalizers().iter().any(|f| f == "mysqlbackup.dev/delete-data")
    })
    .await;
    // The schedule's template is editable, which the previous CRDs refused.
    let schedule = "{apiVersion: mysqlbackup.dev/v1alpha1, kind: BackupSchedule, metadata: {name: tmpl}, spec: {suspend: true, schedule: '0 0 1 1 *', backupTemplate: {source: {pod: gone-0}, method: mariabackup, storage: {url: 's3://bucket/prefix'}}}}";
    ns.apply::<BackupSchedule>(yaml(schedule)).await;
    ns.apply::<BackupSchedule>(yaml(&schedule.replace("method: mariabackup", "method: cold"))).await;
    // Deleting it runs no cleanup: nothing was stored.
    api.delete("kept", &DeleteParams::default()).await.expect("delete");
    wait_gone(&api, "kept", Duration::from_secs(120)).await;
}

/// The pod holding the operator's Lease, once one does (a stopping leader releases it, and for a
/// moment no one holds it).
async fn leader(client: &Client) -> String {
    let leases = Api::<Lease>::namespaced(client.clone(), &operator_namespace());
    let held = wait_for(&leases, "mysql-backup-operator", Duration::from_secs(60), "held", |l: &Lease| {
        l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()).is_some_and(|h| !h.is_empty())
    })
    .await;
    held.spec.and_then(|s| s.holder_identity).expect("a holder")
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/run, or set E2E_KUBECONFIG and pass --ignored"]
async fn the_standby_replica_finishes_a_backup_when_the_leader_dies_mid_run() {
    let (_crds, ns) = with_database("e2e-failover").await;
    let client = ns.client.clone();
    sql(&ns, "load", "db-0.db", LOAD).await;
    // The backup stores on a claim that stays unbound (no provisioner serves its class) until the test
    // binds it: its Job runs, but its pod waits for the volume, so the backup cannot end while the
    // leader that started it lives.
    ns.apply::<PersistentVolumeClaim>(yaml(
        "{apiVersion: v1, kind: PersistentVolumeClaim, metadata: {name: late}, spec: {storageClassName: e2e-late, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}",
    ))
    .await;
    let storage = "{url: 'file:///backups/e2e', persistentVolumeClaim: late}";
    ns.apply::<MySQLBackup>(yaml(&format!(
        "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLBackup, metadata: {{name: survives}}, spec: {{source: {{pod: db-0, connection: {{user: root, passwordSecret: {{name: db-root, key: password}}}}}}, method: mariabackup, storage: {storage}}}}}"
    )))
    .await;
    let backups = ns.api::<MySQLBackup>();
    let running = wait_for(&backups, "survives", Duration::from_secs(300), "running", |b: &MySQLBackup| {
        b.status.as_ref().and_then(|s| s.job_name.as_ref()).is_some()
    })
    .await;
    assert!(!finished(running.status.and_then(|s| s.phase)));

    // Kill the leader (no grace) and wait until it is gone and the other replica leads.
    let old = leader(&client).await;
    let operator_pods = Api::<Pod>::namespaced(client.clone(), &operator_namespace());
    operator_pods
        .delete(&old, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("deleting the leader {old}: {e}"));
    wait_gone(&operator_pods, &old, Duration::from_secs(120)).await;
    let leases = Api::<Lease>::namespaced(client.clone(), &operator_namespace());
    let moved = wait_for(&leases, "mysql-backup-operator", Duration::from_secs(120), "taken over", |l: &Lease| {
        l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()).is_some_and(|h| !h.is_empty() && h != old)
    })
    .await;
    let new = moved.spec.and_then(|s| s.holder_identity).expect("a holder");
    let b = backups.get("survives").await.expect("the backup");
    assert!(!finished(b.status.and_then(|s| s.phase)), "the backup ended before the leader died");

    // Now the volume arrives; the new leader sees the Job through and records it.
    let volume_name = format!("e2e-late-{}", ns.name);
    let volume: PersistentVolume = yaml(&format!(
        "{{apiVersion: v1, kind: PersistentVolume, metadata: {{name: {volume_name}}}, spec: {{storageClassName: e2e-late, capacity: {{storage: 1Gi}}, accessModes: [ReadWriteOnce], persistentVolumeReclaimPolicy: Retain, hostPath: {{path: /tmp/mysql-backup-operator-{volume_name}, type: DirectoryOrCreate}}, claimRef: {{namespace: {}, name: late}}}}}}",
        ns.name
    ));
    let volumes = Api::<PersistentVolume>::all(client.clone());
    volumes.create(&PostParams::default(), &volume).await.expect("the late volume");
    let status = backup_finished(&ns, "survives").await;
    let _ = volumes.delete(&volume_name, &DeleteParams::default()).await;
    assert_eq!(status.phase, Some(Phase::Complete), "{:#?}", status.conditions);
    assert!(status.positions.and_then(|p| p.gtid_executed).is_some());
    assert_eq!(leader(&client).await, new, "the new leader kept the Lease");
    let jobs = ns.api::<Job>().list(&ListParams::default()).await.expect("jobs");
    let names: Vec<String> = jobs.items.iter().map(|j| j.name_any()).filter(|n| n.starts_with("backup-")).collect();
    assert_eq!(names, vec!["backup-survives".to_string()], "exactly one backup Job");
    let job = jobs.items.iter().find(|j| j.name_any() == "backup-survives").and_then(|j| j.status.as_ref());
    assert_eq!(job.and_then(|s| s.succeeded), Some(1));
}

/// The Events recorded for `name`, as (type, reason, message).
async fn events_of(ns: &TestNamespace, name: &str) -> Vec<(String, String, String)> {
    let events = ns
        .api::<Event>()
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .expect("events");
    events
        .items
        .into_iter()
        .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/run, or set E2E_KUBECONFIG and pass --ignored"]
async fn bad_resources_get_conditions_and_events_while_good_ones_proceed() {
    let (_crds, ns) = with_database("e2e-bad").await;
    let storage = "{url: 'file:///backups/e2e', persistentVolumeClaim: backups}";
    let conn = "{user: root, passwordSecret: {name: db-root, key: password}}";
    let backup = |name: &str, source: &str, storage: &str| {
        yaml::<MySQLBackup>(&format!(
            "{{apiVersion: mysqlbackup.dev/v1alpha1, kind: MySQLBackup, metadata: {{name: {name}}}, spec: {{source: {source}, method: mariabackup, storage: {storage}}}}}"
        ))
    };
    ns.apply(backup("no-pod", &format!("{{pod: db-9, connection: {conn}}}"), storage)).await;
    ns.apply(backup(
        "no-secret",
        "{pod: db-0, connection: {user: root, passwordSecret: {name: nowhere, key: password}}}",
        storage,
    ))
    .await;
    // The schema refuses a URL of an unknown scheme outright; one it cannot refuse fails the backup.
    let refused = ns
        .api::<MySQLBackup>()
        .patch(
            "ftp",
            &PatchParams::apply("e2e"),
            &Patch::Apply(backup("ftp", &format!("{{pod: db-0, connection: {conn}}}"), "{url: 'ftp://host/backups'}")),
        )
        .await
        .expect_err("refused by the schema")
        .to_string();
    assert!(refused.contains("url must start with s3://, az://, gs:// or file://"), "{refused}");
    ns.apply(backup("bad-url", &format!("{{pod: db-0, connection: {conn}}}"), "{url: 'file:///backups/e2e'}")).await;
    ns.apply(backup("good", &format!("{{pod: db-0, connection: {conn}}}"), storage)).await;

    let backups = ns.api::<MySQLBackup>();
    assert_eq!(backup_finished(&ns, "good").await.phase, Some(Phase::Complete));
    let expected = [
        ("no-pod", "Blocked", "PodNotFound", format!("pod db-9 not found in namespace {}", ns.name)),
        (
            "no-secret",
            "Blocked",
            "SecretNotFound",
            "Secret nowhere (spec.source.connection.passwordSecret) not found".to_string(),
        ),
        (
            "bad-url",
            "Failed",
            "InvalidSpec",
            "spec.storage.url is file:// but spec.storage.persistentVolumeClaim names no volume".to_string(),
        ),
    ];
    for (name, kind, reason, message) in expected {
        let b = backups.get(name).await.expect("the bad backup");
        let conditions = b.status.map(|s| s.conditions).unwrap_or_default();
        let c = conditions.iter().find(|c| c.type_ == kind && c.status == "True");
        let c = c.unwrap_or_else(|| panic!("{name}: no {kind} condition in {conditions:#?}"));
        assert_eq!((c.reason.as_str(), c.message.as_str()), (reason, message.as_str()), "{name}");
        let events = events_of(&ns, name).await;
        assert!(
            events.iter().any(|(t, r, m)| t == "Warning" && r == reason && *m == message),
            "{name}: no Warning {reason} Event in {events:#?}"
        );
        assert!(ns.api::<Job>().get_opt(&format!("backup-{name}")).await.expect("jobs").is_none(), "{name} got a Job");
    }

    // The finalizer follows deletionPolicy both ways.
    let has_finalizer = |b: &MySQLBackup| b.finalizers().iter().any(|f| f == "mysqlbackup.dev/delete-data");
    patch_spec(&backups, "no-pod", serde_json::json!({"deletionPolicy": "Delete"})).await.expect("switch to Delete");
    wait_for(&backups, "no-pod", Duration::from_secs(60), "finalized", has_finalizer).await;
    patch_spec(&backups, "no-pod", serde_json::json!({"deletionPolicy": "Retain"})).await.expect("switch to Retain");
    wait_for(&backups, "no-pod", Duration::from_secs(60), "without the finalizer", |b: &MySQLBackup| !has_finalizer(b))
        .await;

    // deletionPolicy switched on the finished backup: the finalizer follows, and deleting the
    // object deletes its data through a cleanup Job.
    let switched =
        patch_spec(&backups, "good", serde_json::json!({"deletionPolicy": "Delete"})).await.expect("switch to Delete");
    assert_eq!(switched.spec.deletion_policy, mysql_backup_operator::crd::DeletionPolicy::Delete);
    wait_for(&backups, "good", Duration::from_secs(60), "finalized", |b: &MySQLBackup| {
        b.finalizers().iter().any(|f| f == "mysqlbackup.dev/delete-data")
    })
    .await;
    let err = patch_spec(&backups, "good", serde_json::json!({"source": {"pod": "db-1"}})).await.expect_err("refused");
    assert!(err.contains("spec is immutable except deletionPolicy: create a new MySQLBackup"), "{err}");
    backups.delete("good", &DeleteParams::default()).await.expect("delete");
    wait_gone(&backups, "good", Duration::from_secs(300)).await;
    let cleanup = ns.api::<Job>().get("cleanup-good").await.expect("the cleanup Job");
    assert_eq!(cleanup.status.and_then(|s| s.succeeded), Some(1));
}
