//! Applying what a reconcile decided: Jobs (server-side apply), the finalizers of MySQLBackups, and
//! deletions that tolerate an object already gone.

use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};

use crate::controller::backup::deletion;
use crate::controller::context::{FIELD_MANAGER, ReconcileError};
use crate::crd::MySQLBackup;

/// Applies `job` server-side.
pub(crate) async fn apply_job(api: &Api<Job>, job: &Job) -> Result<(), ReconcileError> {
    let name = job.name_any();
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(job))
        .await
        .map_err(|source| ReconcileError::ApplyJob { job: name, source })?;
    Ok(())
}

/// The finalizers of `backup` but the delete-data one.
pub(crate) fn without_ours(backup: &MySQLBackup) -> Vec<String> {
    backup.finalizers().iter().filter(|f| *f != deletion::FINALIZER).cloned().collect()
}

/// Sets the finalizers of `backup` to `finalizers`, only if the object has not changed since it was read
/// (the resourceVersion makes the merge patch conditional), so no one else's finalizer is lost.
pub(crate) async fn set_finalizers(
    api: &Api<MySQLBackup>,
    backup: &MySQLBackup,
    finalizers: Vec<String>,
) -> Result<(), ReconcileError> {
    let name = backup.name_any();
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": backup.resource_version() },
    });
    match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        // Gone already: nothing holds it.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(ReconcileError::Finalizer { name, source }),
    }
}

/// Deletes `name` in the background; one already gone is not an error.
pub(crate) async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
