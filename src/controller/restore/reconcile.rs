//! The reconcile of a MySQLRestore against the API: observe its backup, target claim, Job and
//! Secrets, decide (pure, in [`super::decide`]), apply the claim and Job, write the status and publish Events.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{PersistentVolumeClaim, Pod, Secret},
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};

use crate::controller::apply::apply_job;
use crate::controller::build;
use crate::controller::context::{Context, FIELD_MANAGER, ReconcileError};
use crate::controller::observe::{finished_job_message, observe_err, secret_keys};
use crate::controller::restore::decide as restore_decision;
use crate::controller::status::{apply_status, is_finished, next_action, publish};
use crate::crd::{MySQLBackup, MySQLRestore};

/// Reconciles one MySQLRestore.
#[tracing::instrument(skip_all, fields(namespace = restore.namespace().unwrap_or_default(), name = restore.name_any()))]
pub async fn reconcile_restore(restore: Arc<MySQLRestore>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let (name, ns) = ReconcileError::name_and_namespace(restore.as_ref())?;
    let client = &ctx.client;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let jobs_api: Api<Job> = Api::namespaced(client.clone(), &ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let backups: Api<MySQLBackup> = Api::namespaced(client.clone(), &ns);
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), &ns);

    // Observe: a finished restore needs nothing but its own status.
    let (backup, claim, job, message, secrets) = if is_finished(restore.status.as_ref().and_then(|s| s.phase)) {
        (None, None, None, None, BTreeMap::new())
    } else {
        let backup = match &restore.spec.source.backup {
            Some(b) => backups.get_opt(b).await.map_err(observe_err(format!("MySQLBackup {b}")))?,
            None => None,
        };
        let claim_name = crate::controller::restore::build::restore_target_claim(&restore);
        let claim =
            claims.get_opt(&claim_name).await.map_err(observe_err(format!("PersistentVolumeClaim {claim_name}")))?;
        let job_name = build::child_name("restore", &name);
        let job = jobs_api.get_opt(&job_name).await.map_err(observe_err(format!("Job {job_name}")))?;
        let message = finished_job_message(&pods, job.as_ref()).await?;
        let storage = backup.as_ref().map(|b| &b.spec.storage).or(restore.spec.source.storage.as_ref());
        let secrets = secret_keys(&secrets_api, storage.into_iter().flat_map(|s| s.secret_names())).await?;
        (backup, claim, job, message, secrets)
    };

    // Decide.
    let restore_decision::Decision { claim: new_claim, job: desired, status, events, requeue } =
        restore_decision::decide(&restore_decision::Observed {
            restore: &restore,
            backup: backup.as_ref(),
            claim: claim.as_ref(),
            job: job.as_ref(),
            agent_message: message.as_deref(),
            secrets: &secrets,
            operator_image: &ctx.operator_image,
            now: Time(k8s_openapi::jiff::Timestamp::now()),
        });

    // Apply: the claim first, so the Job never waits on a claim that will not come.
    if let Some(claim) = new_claim {
        let claim_name = claim.name_any();
        claims
            .patch(&claim_name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&claim))
            .await
            .map_err(|source| ReconcileError::ApplyClaim { claim: claim_name, source })?;
    }
    if let Some(job) = desired {
        apply_job(&jobs_api, &job).await?;
    }
    let api: Api<MySQLRestore> = Api::namespaced(client.clone(), &ns);
    apply_status(&api, &*restore, restore.status.as_ref(), &status).await?;
    publish(&ctx, &*restore, events).await;
    Ok(next_action(requeue, status.phase))
}
