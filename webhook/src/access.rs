//! The SubjectAccessReview behind `exec` hooks: asks the API server whether the user who sent
//! an admission request may `create pods/exec` in a namespace. The I/O only: what the answer
//! means is `cairn_api::validation::check_exec_access`.

use std::collections::BTreeMap;

use cairn_api::validation::ExecAccess;
use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

/// Answers whether a user may exec into pods.
pub trait AccessReview: Send + Sync {
    fn may_exec<'a>(&'a self, user: &'a UserInfo, namespace: &'a str) -> BoxFuture<'a, ExecAccess>;
}

/// [`AccessReview`] by the API server.
pub struct ApiAccessReview(pub Client);

/// The review of `user` for `create pods/exec` in `namespace`.
pub fn exec_review(user: &UserInfo, namespace: &str) -> SubjectAccessReview {
    let extra: Option<BTreeMap<String, Vec<String>>> = user.extra.clone();
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            groups: user.groups.clone(),
            uid: user.uid.clone(),
            extra,
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_string()),
                verb: Some("create".into()),
                resource: Some("pods".into()),
                subresource: Some("exec".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

impl AccessReview for ApiAccessReview {
    fn may_exec<'a>(&'a self, user: &'a UserInfo, namespace: &'a str) -> BoxFuture<'a, ExecAccess> {
        Box::pin(async move {
            let api: Api<SubjectAccessReview> = Api::all(self.0.clone());
            let who = user.username.as_deref().unwrap_or("the user");
            match api
                .create(&PostParams::default(), &exec_review(user, namespace))
                .await
            {
                Ok(r) => {
                    let status = r.status.unwrap_or_default();
                    if status.allowed && status.denied != Some(true) {
                        ExecAccess::Allowed
                    } else {
                        let reason = status.reason.filter(|r| !r.is_empty());
                        ExecAccess::Denied(format!(
                            "{who} may not create pods/exec in namespace {namespace}{}",
                            reason.map(|r| format!(" ({r})")).unwrap_or_default()
                        ))
                    }
                }
                Err(e) => ExecAccess::Denied(format!(
                    "could not ask the API server whether {who} may create pods/exec: {e}"
                )),
            }
        })
    }
}
