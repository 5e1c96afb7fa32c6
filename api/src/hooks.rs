//! Stash's hooks (`spec.hooks`): actions before and after a backup or a restore, with Stash's
//! shapes (`kmodules.xyz/prober` `Handler`, Stash's `HookExecutionPolicy`) and what cairn runs
//! of them. A pre hook runs as the first container of the session's Job, before any data is
//! read; a post hook runs in a Job of its own that the controller starts once the session has
//! ended, when its [`HookExecutionPolicy`] says so, with its templates rendered
//! ([`crate::hook_template`]). An `exec` hook is run by the controller itself ([`ExecHook`]),
//! in a pod of the target, and only for users who may exec there themselves (admission's
//! SubjectAccessReview). What cairn does not run is refused by admission
//! ([`Handler::refusals`]), never accepted and skipped.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction, HTTPHeader, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Hooks of a BackupConfiguration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupHooks {
    /// Runs before the backup reads any data; when it fails, the session fails and no snapshot
    /// is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_backup: Option<Handler>,
    /// Runs after the backup, as its `executionPolicy` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_backup: Option<PostHook>,
}

/// Hooks of a RestoreSession.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreHooks {
    /// Runs before the restore writes anything; when it fails, the restore fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_restore: Option<Handler>,
    /// Runs after the restore, as its `executionPolicy` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_restore: Option<PostHook>,
}

/// A post hook: a handler and when it runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostHook {
    #[serde(flatten)]
    pub handler: Handler,
    /// When the hook runs: `Always` (the default), `OnSuccess`, `OnFailure`, or
    /// `OnFinalRetryFailure` (a failed backup with no retry left).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::optional_enum::<HookExecutionPolicy>")]
    pub execution_policy: Option<HookExecutionPolicy>,
}

/// Stash's `HookExecutionPolicy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum HookExecutionPolicy {
    #[default]
    Always,
    OnSuccess,
    OnFailure,
    OnFinalRetryFailure,
}

/// One action (`kmodules.xyz/prober` `Handler`): exactly one of `exec`, `httpGet`, `httpPost`,
/// `tcpSocket`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Handler {
    /// A command run in a container of the target's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    /// An HTTP GET; it succeeds with a status from 200 to 399.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HTTPGetAction>,
    /// An HTTP POST; it succeeds with a status from 200 to 399.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_post: Option<HTTPPostAction>,
    /// A TCP connection; it succeeds when the port accepts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TCPSocketAction>,
    /// The container where `exec` runs, or whose named port an HTTP or TCP hook uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
}

/// An HTTP POST (`kmodules.xyz/prober` `HTTPPostAction`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPPostAction {
    /// Path on the server, e.g. `/notify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Port number (1 to 65535).
    pub port: IntOrString,
    /// Host name or IP address to connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `HTTP` (the default) or `HTTPS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Headers of the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HTTPHeader>,
    /// Body of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Form fields, sent URL-encoded instead of `body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<BTreeMap<String, Vec<String>>>,
}

/// The request an HTTP hook makes, whether GET or POST.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpRequest<'a> {
    pub method: &'static str,
    pub url: String,
    pub headers: &'a [HTTPHeader],
    /// Body and its content type, if any.
    pub body: Option<(String, &'static str)>,
}

/// The action of a handler that cairn runs.
#[derive(Clone, Debug, PartialEq)]
pub enum Action<'a> {
    Http(HttpRequest<'a>),
    /// `host:port` to connect to.
    Tcp(String),
    /// A command the controller runs in a pod of the target ([`ExecHook`]).
    Exec(&'a [String]),
}

/// An `exec` hook as the controller runs it: in the first Running pod (by name) behind the
/// `clientConfig.service` of the target AppBinding, in `containerName` (else the pod's first
/// container).
#[derive(Clone, Debug, PartialEq)]
pub struct ExecHook {
    /// Stash's name of the hook (`preBackup`, `postRestore`, ...).
    pub name: &'static str,
    /// The handler, its templates rendered (post hooks).
    pub handler: Handler,
    /// The AppBinding the session works on, in the session's namespace.
    pub app_binding: String,
}

impl ExecHook {
    /// The command to run.
    pub fn command(&self) -> &[String] {
        self.handler
            .exec
            .as_ref()
            .and_then(|e| e.command.as_deref())
            .unwrap_or_default()
    }
}

impl HookExecutionPolicy {
    /// Whether a post hook runs after a session that `succeeded`, when `retry_left` says a
    /// retry of it is still to come.
    pub fn fires(self, succeeded: bool, retry_left: bool) -> bool {
        match self {
            Self::Always => true,
            Self::OnSuccess => succeeded,
            Self::OnFailure => !succeeded,
            Self::OnFinalRetryFailure => !succeeded && !retry_left,
        }
    }
}

impl PostHook {
    /// Whether it runs: its `executionPolicy`, `Always` when unset (defaulted here, never
    /// written into the object).
    pub fn fires(&self, succeeded: bool, retry_left: bool) -> bool {
        self.execution_policy
            .unwrap_or_default()
            .fires(succeeded, retry_left)
    }
}

/// A port that must be a number: cairn picks no pod whose named port it could read.
fn port_number(port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{n} is not a port: expected 1 to 65535")),
        IntOrString::String(s) => s.parse::<u16>().ok().filter(|n| *n > 0).ok_or_else(|| {
            format!(
                "{s:?}: named ports need the target's pod, which cairn does not pick for hooks \
                 yet; give the port number (1 to 65535)"
            )
        }),
    }
}

/// `http`/`https` from Stash's `scheme` (empty is HTTP).
fn scheme(s: Option<&str>) -> Result<&'static str, String> {
    match s.unwrap_or_default().to_ascii_uppercase().as_str() {
        "" | "HTTP" => Ok("http"),
        "HTTPS" => Ok("https"),
        other => Err(format!("{other:?}: expected HTTP or HTTPS")),
    }
}

/// The host: set, or the target's filled in by [`Handler::with_default_host`].
fn host(h: Option<&str>) -> Result<&str, String> {
    h.filter(|h| !h.is_empty()).ok_or_else(|| {
        "host is required: the target AppBinding has no URL or Service whose host it could \
         default to; name the host, e.g. a Service's DNS name"
            .to_string()
    })
}

/// Sets `host` to `default` when it is unset or empty.
fn default_host(host: &mut Option<String>, default: &str) {
    if host.as_deref().is_none_or(str::is_empty) {
        *host = Some(default.to_string());
    }
}

/// What admission checks a hook without `host` with: its host is the target's, known only
/// when the Job is resolved.
const TARGET_HOST: &str = "the-target";

fn url(
    scheme_: Option<&str>,
    host_: Option<&str>,
    port: &IntOrString,
    path: Option<&str>,
) -> Result<String, String> {
    let scheme_ = scheme(scheme_)?;
    let host_ = host(host_)?;
    let port = port_number(port)?;
    let path = path.unwrap_or_default();
    let slash = if path.starts_with('/') { "" } else { "/" };
    // An IPv6 address needs brackets in a URL.
    let host_ = if host_.contains(':') && !host_.starts_with('[') {
        format!("[{host_}]")
    } else {
        host_.to_string()
    };
    Ok(format!("{scheme_}://{host_}:{port}{slash}{path}"))
}

impl HTTPPostAction {
    /// The body and its type: the URL-encoded `form` when set, else `body` as written (Stash
    /// sends no content type of its own then; `httpHeaders` may set one).
    fn payload(&self) -> Option<(String, &'static str)> {
        if let Some(form) = &self.form {
            let mut enc = url::form_urlencoded::Serializer::new(String::new());
            for (k, values) in form {
                for v in values {
                    enc.append_pair(k, v);
                }
            }
            return Some((enc.finish(), "application/x-www-form-urlencoded"));
        }
        self.body.clone().map(|b| (b, ""))
    }
}

impl Handler {
    /// The action cairn runs, or why it does not run this handler (the path below the
    /// handler's and the reason).
    pub fn action(&self) -> Result<Action<'_>, (&'static str, String)> {
        let set = [
            self.exec.is_some(),
            self.http_get.is_some(),
            self.http_post.is_some(),
            self.tcp_socket.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err((
                "",
                "exactly one of exec, httpGet, httpPost or tcpSocket must be set".into(),
            ));
        }
        if let Some(e) = &self.exec {
            return match e.command.as_deref() {
                Some(command) if command.first().is_some_and(|c| !c.is_empty()) => {
                    Ok(Action::Exec(command))
                }
                _ => Err((
                    "exec.command",
                    "name the command to run, e.g. [\"/bin/sh\", \"-c\", \"sync\"]".into(),
                )),
            };
        }
        if let Some(g) = &self.http_get {
            let url = url(
                g.scheme.as_deref(),
                g.host.as_deref(),
                &g.port,
                g.path.as_deref(),
            )
            .map_err(|e| ("httpGet", e))?;
            return Ok(Action::Http(HttpRequest {
                method: "GET",
                url,
                headers: g.http_headers.as_deref().unwrap_or_default(),
                body: None,
            }));
        }
        if let Some(p) = &self.http_post {
            let url = url(
                p.scheme.as_deref(),
                p.host.as_deref(),
                &p.port,
                p.path.as_deref(),
            )
            .map_err(|e| ("httpPost", e))?;
            return Ok(Action::Http(HttpRequest {
                method: "POST",
                url,
                headers: &p.http_headers,
                body: p.payload(),
            }));
        }
        let t = self.tcp_socket.as_ref().ok_or(("", String::new()))?;
        let host_ = host(t.host.as_deref()).map_err(|e| ("tcpSocket", e))?;
        let port = port_number(&t.port).map_err(|e| ("tcpSocket", e))?;
        Ok(Action::Tcp(format!("{host_}:{port}")))
    }

    /// Every reason admission refuses this handler, as (path below the handler, message).
    /// `templates`: whether its strings may be templates (post hooks; a pre hook has no outcome
    /// to render yet).
    pub fn refusals(&self, templates: bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Err((path, why)) = self.with_default_host(TARGET_HOST).action() {
            out.push((path.to_string(), why));
        }
        let mut texts = Vec::new();
        strings(&serde_json::to_value(self).unwrap_or_default(), &mut texts);
        for text in texts {
            let why = if templates {
                crate::hook_template::check(&text).err()
            } else {
                text.contains("{{").then(|| {
                    "Go templates in pre hooks are not supported yet (only post hooks are \
                     rendered); write the values literally"
                        .to_string()
                })
            };
            if let Some(why) = why {
                out.push((String::new(), why));
                break;
            }
        }
        out
    }

    /// The handler with `host` set to `target` (the host of the target AppBinding) where it is
    /// unset: Stash's default is the target's pod.
    pub fn with_default_host(&self, target: &str) -> Handler {
        let mut h = self.clone();
        if let Some(g) = h.http_get.as_mut() {
            default_host(&mut g.host, target);
        }
        if let Some(p) = h.http_post.as_mut() {
            default_host(&mut p.host, target);
        }
        if let Some(t) = h.tcp_socket.as_mut() {
            default_host(&mut t.host, target);
        }
        h
    }

    /// Whether the controller runs it (`exec`) rather than a hook container.
    pub fn is_exec(&self) -> bool {
        self.exec.is_some()
    }

    /// The handler with every string rendered from the session's summary `values`.
    pub fn rendered(&self, values: &BTreeMap<&str, String>) -> Result<Handler, String> {
        let mut v = serde_json::to_value(self).map_err(|e| e.to_string())?;
        render_strings(&mut v, values)?;
        serde_json::from_value(v).map_err(|e| e.to_string())
    }
}

/// Every string in `v`.
fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

fn render_strings(
    v: &mut serde_json::Value,
    values: &BTreeMap<&str, String>,
) -> Result<(), String> {
    match v {
        serde_json::Value::String(s) => *s = crate::hook_template::render(s, values)?,
        serde_json::Value::Array(a) => {
            for x in a {
                render_strings(x, values)?;
            }
        }
        serde_json::Value::Object(o) => {
            for x in o.values_mut() {
                render_strings(x, values)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Why cairn does not run the hook `name` (`preBackup`, `postRestore`, ...) written as `value`,
/// all reasons in one line; `None` when it runs it. For tools that read manifests as JSON.
pub fn refusal_of(name: &str, value: &serde_json::Value) -> Option<String> {
    let post = name.starts_with("post");
    let reasons: Vec<String> = match serde_json::from_value::<PostHook>(value.clone()) {
        Ok(h) => h
            .handler
            .refusals(post)
            .into_iter()
            .map(|(path, why)| {
                if path.is_empty() {
                    why
                } else {
                    format!("{path}: {why}")
                }
            })
            .collect(),
        Err(e) => vec![e.to_string()],
    };
    (!reasons.is_empty()).then(|| reasons.join("; "))
}
