//! The Pod Security Standards (kubernetes.io/docs/concepts/security/pod-security-standards) as
//! cairn applies them to every Job it runs: the install's level ([`PodSecurityLevel`], restricted
//! unless an admin opted in to more) and the checks of a pod against it.
//!
//! One set of rules serves three callers: admission of `runtimeSettings` (the violations mapped
//! back to the user's fields), admission of a Repository's local volume, and the resolver's last
//! gate on the whole pod it built (which also covers what Tasks and Functions add), so a session
//! admitted while the webhook was away still cannot run a pod the install does not allow.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::core::v1::{
    AppArmorProfile, Capabilities, Container, PodSecurityContext, PodSpec, SELinuxOptions,
    SeccompProfile, SecurityContext, Volume,
};

/// The install value that opts Jobs in to more than `restricted`: the Helm value, the flag of
/// the webhook and the controller, and the kustomize components that set it.
pub const INSTALL_VALUE: &str = "jobPodSecurity";
/// The flag of `cairn-webhook` and `cairn-controller` that carries [`INSTALL_VALUE`].
pub const INSTALL_FLAG: &str = "--job-pod-security";

/// How much a Job's pod may do: the Pod Security Standard it must meet. Ordered from the
/// tightest to the loosest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PodSecurityLevel {
    /// Non-root, no privilege escalation, all capabilities dropped, RuntimeDefault seccomp,
    /// only ephemeral and claim-backed volume types. The default.
    #[default]
    Restricted,
    /// No privileged containers, host namespaces, host paths or ports, unsafe sysctls,
    /// unconfined seccomp or AppArmor.
    Baseline,
    /// Anything: the admin trusts every user who may write a configuration.
    Privileged,
}

impl PodSecurityLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Restricted => "restricted",
            Self::Baseline => "baseline",
            Self::Privileged => "privileged",
        }
    }

    /// How an admin allows what this level allows, for messages.
    fn how_to_allow(self) -> String {
        format!(
            "or install cairn with {INSTALL_VALUE}: {} (Helm value `{INSTALL_VALUE}`, kustomize \
             component `manifests/components/job-pod-security-{}`) to allow it",
            self.as_str(),
            self.as_str()
        )
    }
}

impl fmt::Display for PodSecurityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PodSecurityLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "restricted" => Ok(Self::Restricted),
            "baseline" => Ok(Self::Baseline),
            "privileged" => Ok(Self::Privileged),
            other => Err(format!(
                "{other:?} is not a Pod Security Standard: expected restricted, baseline or privileged"
            )),
        }
    }
}

/// One thing a pod does that a level forbids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Path in the pod (`spec.securityContext.runAsUser`, `metadata.annotations[...]`, ...).
    pub path: String,
    /// What is wrong and what would do instead.
    pub problem: String,
    /// The loosest standard that forbids it: `restricted` or `baseline`.
    pub forbidden_by: PodSecurityLevel,
}

impl Violation {
    /// The message for a user: the problem, the standard, and the install value that allows it.
    pub fn message(&self) -> String {
        let allowed_at = match self.forbidden_by {
            PodSecurityLevel::Restricted => PodSecurityLevel::Baseline,
            _ => PodSecurityLevel::Privileged,
        };
        format!(
            "the {} Pod Security Standard forbids this: {}; {}",
            self.forbidden_by,
            self.problem,
            allowed_at.how_to_allow()
        )
    }

    /// Whether a Job at `level` may not do this.
    pub fn applies_at(&self, level: PodSecurityLevel) -> bool {
        level <= self.forbidden_by
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message())
    }
}

/// A container's security context as cairn builds it: the restricted defaults (no privilege
/// escalation, no capabilities, non-root, read-only root filesystem, RuntimeDefault seccomp),
/// then each layer in order (the Function's, then the user's), every field a layer sets winning.
pub fn container_context<'a>(
    layers: impl IntoIterator<Item = Option<&'a SecurityContext>>,
) -> SecurityContext {
    let base = SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            add: None,
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        seccomp_profile: Some(runtime_default()),
        ..Default::default()
    };
    layers
        .into_iter()
        .fold(base, |sc, layer| overlay(&sc, layer))
}

/// The pod's security context as cairn builds it: non-root as the agent's user (65534),
/// RuntimeDefault seccomp, then the user's settings, every field they set winning.
pub fn pod_context(user: Option<&PodSecurityContext>) -> PodSecurityContext {
    let base = PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(crate::defaults::AGENT_UID),
        run_as_group: Some(crate::defaults::AGENT_UID),
        seccomp_profile: Some(runtime_default()),
        ..Default::default()
    };
    overlay(&base, user)
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_string(),
        localhost_profile: None,
    }
}

/// `over` laid on `base`: every top-level field `over` sets wins. Works on the JSON form so new
/// Kubernetes fields merge without code here.
fn overlay<T: serde::Serialize + serde::de::DeserializeOwned + Clone>(
    base: &T,
    over: Option<&T>,
) -> T {
    let Some(over) = over else {
        return base.clone();
    };
    let (Ok(mut b), Ok(o)) = (serde_json::to_value(base), serde_json::to_value(over)) else {
        return base.clone();
    };
    if let (Some(bm), Some(om)) = (b.as_object_mut(), o.as_object()) {
        for (k, v) in om {
            if !v.is_null() {
                bm.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::from_value(b).unwrap_or_else(|_| base.clone())
}

/// Capabilities `baseline` lets a container add (Docker's default set).
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
/// Sysctls `baseline` allows (namespaced and isolated from the node).
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];
/// SELinux types `baseline` allows.
const SELINUX_TYPES: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];
const APPARMOR_ANNOTATION: &str = "container.apparmor.security.beta.kubernetes.io/";

/// Collects violations with their paths.
struct Findings(Vec<Violation>);

impl Findings {
    fn add(&mut self, path: String, by: PodSecurityLevel, problem: impl Into<String>) {
        self.0.push(Violation {
            path,
            problem: problem.into(),
            forbidden_by: by,
        });
    }
}

use PodSecurityLevel::{Baseline, Restricted};

/// Every violation of `restricted` (and so of `baseline`) in a pod: its annotations and spec.
/// Paths start at the pod (`metadata.annotations[...]`, `spec....`).
pub fn check_pod(annotations: Option<&BTreeMap<String, String>>, spec: &PodSpec) -> Vec<Violation> {
    let mut f = Findings(Vec::new());
    for (key, value) in annotations.into_iter().flatten() {
        if key.starts_with(APPARMOR_ANNOTATION)
            && value != "runtime/default"
            && !value.starts_with("localhost/")
        {
            f.add(
                format!("metadata.annotations[{key}]"),
                Baseline,
                format!("AppArmor profile {value:?}: use runtime/default or localhost/<profile>"),
            );
        }
    }
    for (flag, set, name) in [
        ("hostNetwork", spec.host_network, "the node's network"),
        ("hostPID", spec.host_pid, "the node's processes"),
        ("hostIPC", spec.host_ipc, "the node's IPC"),
    ] {
        if set == Some(true) {
            f.add(
                format!("spec.{flag}"),
                Baseline,
                format!("true shares {name} with the pod: leave it unset"),
            );
        }
    }
    let pod = spec.security_context.clone().unwrap_or_default();
    check_pod_context(&mut f, "spec.securityContext", &pod);
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (format!("spec.initContainers[{i}]"), c))
        .chain(
            spec.containers
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("spec.containers[{i}]"), c)),
        );
    for (path, c) in containers {
        check_container(&mut f, &path, c, &pod);
    }
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        check_volume(&mut f, &format!("spec.volumes[{i}]"), v);
    }
    f.0
}

/// The violations of a volume: `hostPath` (baseline), and any type but the ephemeral and
/// claim-backed ones (restricted).
pub fn check_volume_source(path: &str, volume: &Volume) -> Vec<Violation> {
    let mut f = Findings(Vec::new());
    check_volume(&mut f, path, volume);
    f.0
}

fn check_pod_context(f: &mut Findings, path: &str, sc: &PodSecurityContext) {
    check_identity(f, path, sc.run_as_user, sc.run_as_non_root);
    check_seccomp(f, path, sc.seccomp_profile.as_ref());
    check_apparmor(f, path, sc.app_armor_profile.as_ref());
    check_selinux(f, path, sc.se_linux_options.as_ref());
    if sc.windows_options.as_ref().and_then(|w| w.host_process) == Some(true) {
        f.add(
            format!("{path}.windowsOptions.hostProcess"),
            Baseline,
            "true runs a Windows host process: leave it unset",
        );
    }
    for (i, s) in sc.sysctls.iter().flatten().enumerate() {
        if !SAFE_SYSCTLS.contains(&s.name.as_str()) {
            f.add(
                format!("{path}.sysctls[{i}].name"),
                Baseline,
                format!(
                    "sysctl {:?} is not one of the safe ones ({})",
                    s.name,
                    SAFE_SYSCTLS.join(", ")
                ),
            );
        }
    }
}

fn check_container(f: &mut Findings, path: &str, c: &Container, pod: &PodSecurityContext) {
    for (i, p) in c.ports.iter().flatten().enumerate() {
        if p.host_port.is_some_and(|h| h != 0) {
            f.add(
                format!("{path}.ports[{i}].hostPort"),
                Baseline,
                "a host port binds the node's network: leave it unset",
            );
        }
    }
    let sc = c.security_context.clone().unwrap_or_default();
    let path = format!("{path}.securityContext");
    if sc.privileged == Some(true) {
        f.add(
            format!("{path}.privileged"),
            Baseline,
            "true gives the container the whole node: leave it unset",
        );
    }
    if sc.allow_privilege_escalation != Some(false) {
        f.add(
            format!("{path}.allowPrivilegeEscalation"),
            Restricted,
            "must be false: leave it unset (cairn sets false)",
        );
    }
    check_capabilities(f, &path, sc.capabilities.as_ref());
    check_identity(f, &path, sc.run_as_user, sc.run_as_non_root);
    if sc.run_as_non_root.is_none() && pod.run_as_non_root != Some(true) {
        f.add(
            format!("{path}.runAsNonRoot"),
            Restricted,
            "must be true here or in the pod's securityContext: leave it unset (cairn sets true)",
        );
    }
    check_seccomp(f, &path, sc.seccomp_profile.as_ref());
    let has_seccomp = |p: Option<&SeccompProfile>| {
        p.is_some_and(|p| p.type_ == "RuntimeDefault" || p.type_ == "Localhost")
    };
    if !has_seccomp(sc.seccomp_profile.as_ref()) && !has_seccomp(pod.seccomp_profile.as_ref()) {
        f.add(
            format!("{path}.seccompProfile.type"),
            Restricted,
            "must be RuntimeDefault or Localhost here or in the pod's securityContext",
        );
    }
    check_apparmor(f, &path, sc.app_armor_profile.as_ref());
    check_selinux(f, &path, sc.se_linux_options.as_ref());
    if sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
        f.add(
            format!("{path}.procMount"),
            Baseline,
            "only Default hides the node's /proc paths: leave it unset",
        );
    }
    if sc.windows_options.as_ref().and_then(|w| w.host_process) == Some(true) {
        f.add(
            format!("{path}.windowsOptions.hostProcess"),
            Baseline,
            "true runs a Windows host process: leave it unset",
        );
    }
}

/// `runAsUser: 0` anywhere, and `runAsNonRoot: false` set explicitly anywhere (the standard
/// counts an explicit `false` even where a container overrides it).
fn check_identity(f: &mut Findings, path: &str, user: Option<i64>, non_root: Option<bool>) {
    if user == Some(0) {
        f.add(
            format!("{path}.runAsUser"),
            Restricted,
            "0 runs as root: set a non-zero user (cairn's agent runs as 65534) or leave it unset",
        );
    }
    if non_root == Some(false) {
        f.add(
            format!("{path}.runAsNonRoot"),
            Restricted,
            "false lets the image run as root: leave it unset (cairn sets true)",
        );
    }
}

fn check_capabilities(f: &mut Findings, path: &str, caps: Option<&Capabilities>) {
    let caps = caps.cloned().unwrap_or_default();
    if !caps.drop.iter().flatten().any(|c| c == "ALL") {
        f.add(
            format!("{path}.capabilities.drop"),
            Restricted,
            "must include ALL: leave capabilities unset (cairn drops ALL)",
        );
    }
    for (i, cap) in caps.add.iter().flatten().enumerate() {
        let name = cap.trim_start_matches("CAP_");
        let p = format!("{path}.capabilities.add[{i}]");
        if !BASELINE_CAPABILITIES.contains(&name) {
            f.add(
                p,
                Baseline,
                format!("capability {cap:?} is beyond the default set"),
            );
        } else if name != "NET_BIND_SERVICE" {
            f.add(
                p,
                Restricted,
                format!("capability {cap:?}: only NET_BIND_SERVICE may be added"),
            );
        }
    }
}

fn check_seccomp(f: &mut Findings, path: &str, profile: Option<&SeccompProfile>) {
    if profile.is_some_and(|p| p.type_ == "Unconfined") {
        f.add(
            format!("{path}.seccompProfile.type"),
            Baseline,
            "Unconfined turns the system call filter off: use RuntimeDefault or Localhost",
        );
    }
}

fn check_apparmor(f: &mut Findings, path: &str, profile: Option<&AppArmorProfile>) {
    if profile.is_some_and(|p| p.type_ == "Unconfined") {
        f.add(
            format!("{path}.appArmorProfile.type"),
            Baseline,
            "Unconfined turns AppArmor off: use RuntimeDefault or Localhost",
        );
    }
}

fn check_selinux(f: &mut Findings, path: &str, options: Option<&SELinuxOptions>) {
    let Some(o) = options else { return };
    if !SELINUX_TYPES.contains(&o.type_.as_deref().unwrap_or_default()) {
        f.add(
            format!("{path}.seLinuxOptions.type"),
            Baseline,
            format!(
                "SELinux type {:?} is not a container type ({})",
                o.type_.as_deref().unwrap_or_default(),
                SELINUX_TYPES[1..].join(", ")
            ),
        );
    }
    for (field, value) in [("user", &o.user), ("role", &o.role)] {
        if value.as_deref().is_some_and(|v| !v.is_empty()) {
            f.add(
                format!("{path}.seLinuxOptions.{field}"),
                Baseline,
                format!("a custom SELinux {field}: leave it unset"),
            );
        }
    }
}

fn check_volume(f: &mut Findings, path: &str, v: &Volume) {
    if v.host_path.is_some() {
        f.add(
            format!("{path}.hostPath"),
            Baseline,
            "a hostPath volume opens the node's files to the pod: use a persistentVolumeClaim",
        );
        return;
    }
    let allowed = v.config_map.is_some()
        || v.csi.is_some()
        || v.downward_api.is_some()
        || v.empty_dir.is_some()
        || v.ephemeral.is_some()
        || v.persistent_volume_claim.is_some()
        || v.projected.is_some()
        || v.secret.is_some();
    if !allowed {
        let kind = serde_json::to_value(v)
            .ok()
            .and_then(|j| j.as_object()?.keys().find(|k| *k != "name").cloned())
            .unwrap_or_else(|| "this".into());
        f.add(
            format!("{path}.{kind}"),
            Restricted,
            format!(
                "a {kind} volume is not one of configMap, csi, downwardAPI, emptyDir, ephemeral, \
                 persistentVolumeClaim, projected, secret: use a persistentVolumeClaim bound to it"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> PodSpec {
        serde_json::from_value(spec).expect("pod spec")
    }

    fn restricted_container() -> serde_json::Value {
        json!({"name": "c", "securityContext": {
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}})
    }

    #[test]
    fn a_restricted_pod_has_no_violation() {
        let spec = pod(json!({"containers": [restricted_container()],
            "volumes": [{"name": "t", "emptyDir": {}}, {"name": "s", "secret": {"secretName": "x"}}]}));
        assert_eq!(check_pod(None, &spec), vec![]);
    }

    #[test]
    fn each_kind_of_violation_is_found_at_its_level() {
        let cases = [
            (json!({"hostNetwork": true}), "spec.hostNetwork", Baseline),
            (
                json!({"securityContext": {"runAsUser": 0}}),
                "spec.securityContext.runAsUser",
                Restricted,
            ),
            (
                json!({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}}),
                "spec.securityContext.sysctls[0].name",
                Baseline,
            ),
            (
                json!({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}),
                "spec.volumes[0].hostPath",
                Baseline,
            ),
            (
                json!({"volumes": [{"name": "n", "nfs": {"server": "s", "path": "/"}}]}),
                "spec.volumes[0].nfs",
                Restricted,
            ),
        ];
        for (extra, path, level) in cases {
            let mut spec = json!({"containers": [restricted_container()]});
            spec.as_object_mut()
                .expect("object")
                .extend(extra.as_object().expect("object").clone());
            let found = check_pod(None, &pod(spec));
            assert!(
                found
                    .iter()
                    .any(|v| v.path == path && v.forbidden_by == level),
                "{path}: {found:?}"
            );
        }
    }

    #[test]
    fn container_rules_follow_the_pod_level_fallbacks() {
        let bare = pod(json!({"containers": [{"name": "c"}]}));
        let paths: Vec<String> = check_pod(None, &bare).into_iter().map(|v| v.path).collect();
        assert!(paths.contains(&"spec.containers[0].securityContext.runAsNonRoot".into()));
        assert!(paths.contains(&"spec.containers[0].securityContext.seccompProfile.type".into()));
        let with_pod = pod(json!({"securityContext": {"runAsNonRoot": true,
            "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]}}}]}));
        assert_eq!(check_pod(None, &with_pod), vec![]);
    }

    #[test]
    fn messages_name_the_install_value_that_allows_it() {
        let spec = pod(json!({"containers": [{"name": "c", "securityContext": {
            "privileged": true, "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]},
            "runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}}]}));
        let found = check_pod(None, &spec);
        let privileged = found
            .iter()
            .find(|v| v.path.ends_with("privileged"))
            .expect("privileged");
        assert!(privileged.message().contains("jobPodSecurity: privileged"));
        assert!(!privileged.applies_at(PodSecurityLevel::Privileged));
        assert!(privileged.applies_at(PodSecurityLevel::Baseline));
        let net_admin = pod(json!({"containers": [{"name": "c", "securityContext": {
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
            "runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}}]}));
        let v = &check_pod(None, &net_admin)[0];
        assert!(v.message().contains("jobPodSecurity: baseline"), "{v}");
        assert!(!v.applies_at(PodSecurityLevel::Baseline));
    }

    #[test]
    fn levels_parse_and_order() {
        assert_eq!("Baseline".parse(), Ok(PodSecurityLevel::Baseline));
        assert!("root".parse::<PodSecurityLevel>().is_err());
        assert!(PodSecurityLevel::Restricted < PodSecurityLevel::Privileged);
    }
}
