//! What a RestoreSession has of its own in a session's life (the life itself is
//! [`crate::session`]): it is its own invoker (interim volume, timeOut), reports one host and
//! what was restored. No schedule, skip, retry or history.

use cairn_api::RestoreSession;
use cairn_api::common::{BackupTarget, SessionPhase};
use cairn_api::hooks::ExecHook;
use cairn_api::naming::restore_job_name;
use cairn_api::resolve::{
    JobSource, PostHookRun, ResolveError, SessionEnd, resolve_post_hook, resolve_restore_job,
};
use cairn_api::restore_session::{HostRestoreStats, RestoreSessionStatus, RestoredSummary};
use cairn_api::result::{AgentResult, RestoreResult};
use cairn_api::validation::Lookups;
use k8s_openapi::api::batch::v1::JobTemplateSpec;
use kube::ResourceExt;

use crate::context::Context;
use crate::error::Result;
use crate::session::{JobInputs, Prepared, SessionKind};

impl SessionKind for RestoreSession {
    const WORK: &'static str = "Restore";
    type Outcome = RestoreResult;

    type Status = RestoreSessionStatus;

    fn status(&self) -> Option<&RestoreSessionStatus> {
        self.status.as_ref()
    }
    fn job_name(&self) -> String {
        restore_job_name(&self.name_any())
    }
    /// A restore is its own invoker.
    /// The Repository restored from.
    fn invoker_name(&self) -> String {
        self.spec.repository.name.clone()
    }
    fn resolve(&self, ctx: &Context) -> Result<JobTemplateSpec, ResolveError> {
        resolve_restore_job(self, &ctx.stores, &ctx.install)
    }
    fn post_hook(
        &self,
        ctx: &Context,
        ended: &SessionEnd<'_>,
    ) -> Result<Option<PostHookRun>, ResolveError> {
        let source = JobSource::restore(self);
        let namespace = self.namespace().unwrap_or_default();
        let target = ctx.stores.app_binding(&namespace, &source.target_ref.name);
        resolve_post_hook(&source, ended, &ctx.install, target.as_deref())
    }
    fn pre_exec_hook(&self, _ctx: &Context) -> Result<Option<ExecHook>, ResolveError> {
        JobSource::restore(self).pre_exec_hook()
    }

    async fn prepare(&self, _ctx: &Context) -> Result<Prepared> {
        Ok(Prepared::Run(Box::new(JobInputs {
            interim: self.spec.interim_volume_template.clone(),
            time_out: self.spec.time_out.clone(),
        })))
    }

    fn time_out(&self, _ctx: &Context) -> Option<String> {
        self.spec.time_out.clone()
    }

    fn outcome(result: AgentResult) -> Option<RestoreResult> {
        match result {
            AgentResult::Restore(r) => Some(r),
            _ => None,
        }
    }

    fn succeeded_message(res: &RestoreResult) -> String {
        let lost = match res.not_carried.len() {
            0 => String::new(),
            n => format!(
                "; {n} setting(s) the target lacks not carried: see status.restored.notCarried"
            ),
        };
        format!(
            "restored snapshot {} ({} indices, {} documents){lost}",
            res.snapshot.get(..8).unwrap_or(&res.snapshot),
            res.indices,
            res.documents
        )
    }

    fn succeeded_status(res: &RestoreResult, status: &mut RestoreSessionStatus) {
        status.restored = Some(RestoredSummary {
            snapshot: res.snapshot.clone(),
            documents: i64::try_from(res.documents).ok(),
            indices: i64::try_from(res.indices).ok(),
            not_carried: res.not_carried.clone(),
        });
    }

    fn running_status(&self, status: &mut RestoreSessionStatus) {
        status.total_hosts = Some(1);
    }

    /// One host, named by the target's alias.
    fn finished_status(
        &self,
        _target: Option<&BackupTarget>,
        phase: SessionPhase,
        duration: &str,
        message: &str,
        status: &mut RestoreSessionStatus,
    ) {
        let ok = phase == SessionPhase::Succeeded;
        status.total_hosts = Some(1);
        status.stats = vec![HostRestoreStats {
            hostname: self.spec.target.alias.as_deref().unwrap_or("host-0").into(),
            phase: Some(phase),
            duration: Some(duration.into()),
            error: (!ok).then(|| message.into()),
        }];
    }
}
