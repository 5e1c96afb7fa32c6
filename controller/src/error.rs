//! The controller's error type: what a reconcile can fail with, and the one error policy of
//! every controller (the reconcile is retried with backoff).

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use crate::context::{Context, controller_name, key};
use crate::metrics::ErrorLabels;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("the reconcile did not end within {}s: abandoned, to be retried", .0.as_secs())]
    TimedOut(std::time::Duration),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Json(_) => "json",
            Error::Invalid(_) => "invalid",
            Error::TimedOut(_) => "timeout",
        }
    }
}

/// Reports a failed reconcile of `obj` (a log line, the `reconcile_errors` metric) and retries
/// it with backoff.
pub fn error_policy<K>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    tracing::warn!(
        kind = %K::kind(&()),
        namespace = obj.namespace().unwrap_or_default(),
        name = %obj.name_any(),
        %error,
        "reconcile failed"
    );
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            controller: controller_name(obj.as_ref()),
            error: error.metric_label().into(),
        })
        .inc();
    Action::requeue(ctx.backoff(&key(obj.as_ref())))
}
