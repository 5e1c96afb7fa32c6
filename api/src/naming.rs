//! Names of the objects cairn makes: sessions per slot, Jobs, interim PVCs; the labels they carry.
//!
//! Every name made here is a DNS-1123 label of at most 63 characters: session names become the
//! value of the `cairn.dev/session` label, and Kubernetes puts Job names into a label of the Job's
//! pods, so 63 is the limit for all of them.
//!
//! When a name would not fit (or its variable part has characters a label may not hold), the
//! variable part is cut and a short stable hash of the *whole* original part is added:
//! `<kept prefix>-<hash>`, the hash being 5 hex digits of 32-bit FNV-1a. The fixed parts (the
//! slot, `cairn-backup-`, the template name) are kept intact. The hash keeps names of different
//! long inputs apart (a collision needs two inputs sharing the kept prefix *and* the 20-bit hash);
//! it is hand-written rather than std's `RandomState` so that every process, on every run, makes
//! the same name for the same input: the controller relies on "creating an existing name means
//! the slot is done".
//!
//! Names that fit are used exactly as the spec writes them, with no hash.

/// Label on sessions: the kind of the invoker (`BackupConfiguration`, ...).
pub const LABEL_INVOKER_KIND: &str = "cairn.dev/invoker-kind";
/// Label on sessions: the name of the invoker.
pub const LABEL_INVOKER_NAME: &str = "cairn.dev/invoker-name";
/// Label on Jobs and PVCs: the session they belong to.
pub const LABEL_SESSION: &str = "cairn.dev/session";
/// Label on Jobs and PVCs, with the value [`MANAGED_BY`].
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "cairn";

/// restic tag on every snapshot cairn writes: `cairn.dev/namespace=<namespace>` of the session.
pub const TAG_NAMESPACE: &str = "cairn.dev/namespace";
/// restic tag on every snapshot cairn writes: `cairn.dev/configuration=<name>` that made it.
pub const TAG_CONFIGURATION: &str = "cairn.dev/configuration";

/// Longest DNS-1123 label, and longest label value.
pub const MAX_LABEL_LEN: usize = 63;
/// Longest DNS-1123 subdomain.
pub const MAX_SUBDOMAIN_LEN: usize = 253;

/// Longest interim volume template name admission allows.
///
/// Admission cannot know the session names to come (a BackupSession may be made by hand, with
/// any name), and [`interim_pvc_name`] always fits 63 characters anyway by shortening the session
/// part. The bound makes sure the shortened PVC name still shows what matters: for a scheduled
/// session `<config>-<10-digit slot>`, the PVC name keeps at least 7 characters of the
/// configuration, the hash, the whole slot and the whole template name:
/// 63 - 1 (`-` before the template) - 24 (7 chars + `-` + 5-hex hash + `-` + 10-digit slot) = 38.
/// (Slots have 10 digits until the year 2286.)
pub const MAX_TEMPLATE_NAME_LEN: usize = 38;

const HASH_LEN: usize = 5;
const BACKUP_JOB_PREFIX: &str = "cairn-backup-";
const RESTORE_JOB_PREFIX: &str = "cairn-restore-";
const CHECK_JOB_PREFIX: &str = "cairn-check-";
const FORGET_JOB_PREFIX: &str = "cairn-forget-";
const HOOK_JOB_PREFIX: &str = "cairn-hook-";

/// The user name cairn's agent records in its restic locks in the cluster of `cluster_id` (the
/// UID of its `kube-system` namespace): the one cluster whose live pods the controller lists.
/// A lock of another cluster's cairn (two clusters sharing a repository) never matches it.
pub fn lock_user(cluster_id: &str) -> String {
    format!("cairn@{cluster_id}")
}

/// Whether `hostname` is the host name of a pod of one of cairn's Jobs that lock a repository
/// (a session's, a check's, a forget's; a pod's host name is its name, cut to 63 characters):
/// the agent may judge such a lock holder by the controller's list of live pods.
pub fn is_locking_pod_hostname(hostname: &str) -> bool {
    [
        BACKUP_JOB_PREFIX,
        RESTORE_JOB_PREFIX,
        CHECK_JOB_PREFIX,
        FORGET_JOB_PREFIX,
    ]
    .iter()
    .any(|p| hostname.len() > p.len() && hostname.starts_with(p))
}

/// The scheduled BackupSession of `config` for the slot at `slot_unix_seconds`:
/// `<config>-<slot>`, or `<config prefix>-<hash>-<slot>` when that would not be a DNS label of
/// at most 63 characters (too long, or dots in the configuration name). Always ends in
/// `-<slot>`; the same input always gives the same name.
pub fn session_name_for_slot(config: &str, slot_unix_seconds: i64) -> String {
    fit("", config, &format!("-{slot_unix_seconds}"))
}

/// How many characters the API server appends to a `generateName`.
pub const GENERATED_SUFFIX_LEN: usize = 5;

/// The `generateName` of a session made by hand (`kubectl cairn backup`, `restore`):
/// `<base>-`, `base` shortened (with its hash) so the generated name is a DNS label of at most
/// 63 characters. A BackupSession so named never takes a schedule slot's name: a slot's name
/// ends in `-<slot>`, 10 digits (Unix seconds, from 2001 to 2286), while the generated name
/// ends in `-` and the server's 5 random characters.
pub fn generate_name(base: &str) -> String {
    let max = MAX_LABEL_LEN - 1 - GENERATED_SUFFIX_LEN;
    format!("{}-", fit_within(max, "", base, ""))
}

/// The backup Job of a session: `cairn-backup-<session>`, shortened to fit 63 characters.
pub fn backup_job_name(session: &str) -> String {
    let (stem, slot) = split_slot(session);
    fit(BACKUP_JOB_PREFIX, stem, slot)
}

/// The restore Job of a session: `cairn-restore-<session>`, shortened to fit 63 characters.
pub fn restore_job_name(session: &str) -> String {
    let (stem, slot) = split_slot(session);
    fit(RESTORE_JOB_PREFIX, stem, slot)
}

/// The post hook's Job of a session: `cairn-hook-<session>`, shortened to fit 63 characters.
pub fn hook_job_name(session: &str) -> String {
    let (stem, slot) = split_slot(session);
    fit(HOOK_JOB_PREFIX, stem, slot)
}

/// A hook's container: `pre-backup-hook`, `post-restore-hook`, ... (`when` is `pre` or `post`,
/// `work` `backup` or `restore`).
pub fn hook_container_name(when: &str, work: &str) -> String {
    format!("{when}-{work}-hook")
}

/// Whether a container is a hook's ([`hook_container_name`]): it reads no credentials.
pub fn is_hook_container(name: &str) -> bool {
    [
        "pre-backup-hook",
        "pre-restore-hook",
        "post-backup-hook",
        "post-restore-hook",
    ]
    .contains(&name)
}

/// The interim PVC of a session: `<session>-<template name>`, shortened to fit 63 characters.
///
/// The session part is shortened first; with a template name of at most
/// [`MAX_TEMPLATE_NAME_LEN`] characters that is a DNS label, the name always ends in
/// `-<template name>` (and in `-<slot>-<template name>` for a scheduled session). A longer or
/// invalid template name is shortened too: the result is still a valid, stable name.
pub fn interim_pvc_name(session: &str, template_name: &str) -> String {
    let (stem, slot) = split_slot(session);
    fit("", stem, &format!("{slot}-{template_name}"))
}

/// Whether `s` is a DNS-1123 label: 1 to 63 of `[a-z0-9-]`, starting and ending with `[a-z0-9]`.
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= MAX_LABEL_LEN && is_label_shaped(s)
}

/// Whether `s` is a DNS-1123 subdomain: at most 253 characters, dot-separated parts each shaped
/// like a DNS label. As in Kubernetes' own check (`IsDNS1123Subdomain`, which object names go
/// through), the parts themselves are not limited to 63 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= MAX_SUBDOMAIN_LEN && s.split('.').all(is_label_shaped)
}

/// Whether `s` is a valid label value: empty, or at most 63 of `[A-Za-z0-9._-]`, starting and
/// ending with `[A-Za-z0-9]`.
pub fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (None, _) | (_, None) => true,
        (Some(first), Some(last)) => {
            b.len() <= MAX_LABEL_LEN
                && first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|&c| is_label_value_char(c))
        }
    }
}

/// The inventory Job of Repository `repo` for the request `request` (the value of its
/// `cairn.dev/inventory` annotation; empty at creation): one Job per request.
pub fn inventory_job_name(repo: &str, request: &str) -> String {
    label_value(&format!("cairn-inventory-{repo}-{}", long_hash(request))).to_ascii_lowercase()
}

/// The unlock Job of Repository `repo` for the annotation's value `request` (48 bits of hash:
/// an old request's Job must never answer a new one).
pub fn unlock_job_name(repo: &str, request: &str) -> String {
    label_value(&format!("cairn-unlock-{repo}-{}", long_hash(request))).to_ascii_lowercase()
}

/// The integrity check Job of Repository `repo` for the schedule slot `slot` (Unix seconds).
pub fn check_job_name(repo: &str, slot: i64) -> String {
    label_value(&format!("{CHECK_JOB_PREFIX}{repo}-{slot}")).to_ascii_lowercase()
}

/// The Job that forgets snapshot `id` of Repository `repo`.
pub fn forget_job_name(repo: &str, id: &str) -> String {
    let short = id.get(..16).unwrap_or(id);
    label_value(&format!("{FORGET_JOB_PREFIX}{repo}-{short}")).to_ascii_lowercase()
}

/// Makes any string a valid label value: `s` itself when it is one, otherwise its characters
/// that a label value may hold (others become `-`), cut to fit, then `-<hash of s>`.
pub fn label_value(s: &str) -> String {
    if is_label_value(s) {
        return s.to_owned();
    }
    let is_end = |c: char| !c.is_ascii_alphanumeric();
    let sanitized: String = s
        .chars()
        .map(|c| {
            if c.is_ascii() && is_label_value_char(c as u8) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let kept =
        cut(sanitized.trim_matches(is_end), MAX_LABEL_LEN - HASH_LEN - 1).trim_end_matches(is_end);
    join_hash("", kept, &short_hash(s), "")
}

/// `[a-z0-9-]`, at least one character, alphanumeric at both ends; no length limit.
fn is_label_shaped(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            is_lower_alnum(*first)
                && is_lower_alnum(*last)
                && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_label_value_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')
}

/// `<prefix><head><suffix>` when that is a DNS label; otherwise `<prefix><cut head>-<hash of
/// head><suffix>`, with `head` lowercased, its other non-label characters turned into `-` and
/// cut so that the whole fits. `prefix` and `suffix` are kept as they are; if they leave no room
/// (or are not label material), the whole string is cut and hashed instead, so the result is
/// always a DNS label.
fn fit(prefix: &str, head: &str, suffix: &str) -> String {
    fit_within(MAX_LABEL_LEN, prefix, head, suffix)
}

/// [`fit`] into at most `max` characters (`max` > [`HASH_LEN`] + 1).
fn fit_within(max: usize, prefix: &str, head: &str, suffix: &str) -> String {
    let fits = |s: &str| s.len() <= max && is_dns_label(s);
    let plain = format!("{prefix}{head}{suffix}");
    if fits(&plain) {
        return plain;
    }
    let room = max.saturating_sub(prefix.len() + suffix.len() + HASH_LEN + 1);
    let candidate = join_hash(prefix, &shorten(head, room), &short_hash(head), suffix);
    if fits(&candidate) {
        return candidate;
    }
    join_hash(
        "",
        &shorten(&plain, max - HASH_LEN - 1),
        &short_hash(&plain),
        "",
    )
}

/// `<prefix><kept>-<hash><suffix>`, or `<prefix><hash><suffix>` when nothing is kept.
fn join_hash(prefix: &str, kept: &str, hash: &str, suffix: &str) -> String {
    if kept.is_empty() {
        format!("{prefix}{hash}{suffix}")
    } else {
        format!("{prefix}{kept}-{hash}{suffix}")
    }
}

/// `s` as label material: lowercased, other characters turned into `-`, no `-` at either end,
/// at most `max` bytes.
fn shorten(s: &str, max: usize) -> String {
    let sanitized: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    cut(sanitized.trim_matches('-'), max)
        .trim_end_matches('-')
        .to_owned()
}

/// The first `max` bytes of an ASCII string.
fn cut(s: &str, max: usize) -> &str {
    debug_assert!(s.is_ascii());
    &s[..s.len().min(max)]
}

/// Splits a trailing `-<digits>` (a slot, at most 19 digits as for an i64) off a session name,
/// so Job and PVC names keep the slot readable when the rest has to be shortened. Sessions not
/// ending that way give `(session, "")`.
fn split_slot(session: &str) -> (&str, &str) {
    let digits = session.bytes().rev().take_while(u8::is_ascii_digit).count();
    let cut_at = session.len() - digits;
    if (1..=19).contains(&digits) && session[..cut_at].ends_with('-') {
        session.split_at(cut_at - 1)
    } else {
        (session, "")
    }
}

/// 5 hex digits of the 32-bit FNV-1a hash of `s`.
fn short_hash(s: &str) -> String {
    format!("{:05x}", fnv1a32(s.as_bytes()) & 0xf_ffff)
}

/// 12 hex characters (48 bits) of a 64-bit FNV-1a of `s`: for names among thousands of others,
/// where [`short_hash`]'s 20 bits would collide.
pub fn long_hash(s: &str) -> String {
    let h = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{:012x}", h >> 16)
}

/// 32-bit FNV-1a: tiny, stable across processes and versions, good enough to tell names apart.
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Bytes as `12.3 MiB` (what `totalSize` shows).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_fit_and_never_take_a_slot() {
        assert_eq!(generate_name("nightly-now"), "nightly-now-");
        let long = "a".repeat(80);
        for base in [long.as_str(), "Dots.In.Name-now", "x"] {
            let prefix = generate_name(base);
            let name = format!("{prefix}24680");
            assert!(is_dns_label(&name), "{name}");
            assert!(
                prefix.len() + GENERATED_SUFFIX_LEN <= MAX_LABEL_LEN,
                "{prefix}"
            );
            // The server's 5 characters, even all digits, are never a 10-digit slot.
            let slot = session_name_for_slot(prefix.trim_end_matches('-'), 1_765_000_000);
            assert_ne!(name, slot);
            assert_ne!(split_slot(&name).1.len(), "-1765000000".len());
        }
    }
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn fnv_is_the_standard_one() {
        // Reference values of 32-bit FNV-1a: names must never change between versions.
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
        assert_eq!(short_hash("a"), "c292c");
    }

    #[test]
    fn short_names_are_left_alone() {
        assert_eq!(
            session_name_for_slot("nightly", 1_700_000_000),
            "nightly-1700000000"
        );
        assert_eq!(session_name_for_slot("a", 0), "a-0");
        assert_eq!(
            backup_job_name("nightly-1700000000"),
            "cairn-backup-nightly-1700000000"
        );
        assert_eq!(restore_job_name("restore-1"), "cairn-restore-restore-1");
        assert_eq!(
            interim_pvc_name("nightly-1700000000", "scratch"),
            "nightly-1700000000-scratch"
        );
        assert_eq!(backup_job_name("manual"), "cairn-backup-manual");
    }

    #[test]
    fn long_config_keeps_the_slot() {
        let config = "a".repeat(60);
        let name = session_name_for_slot(&config, 1_700_000_000);
        assert_eq!(name.len(), 63);
        assert!(is_dns_label(&name));
        assert_eq!(
            name,
            format!("{}-{}-1700000000", "a".repeat(46), short_hash(&config))
        );
        // Same input, same name.
        assert_eq!(name, session_name_for_slot(&config, 1_700_000_000));
        // Two configs with the same 46-char prefix stay apart.
        let other = format!("{}b", "a".repeat(59));
        assert_ne!(name, session_name_for_slot(&other, 1_700_000_000));
    }

    #[test]
    fn dots_are_replaced_and_hashed() {
        let name = session_name_for_slot("db.prod", 5);
        assert_eq!(name, format!("db-prod-{}-5", short_hash("db.prod")));
        assert_ne!(name, session_name_for_slot("db-prod", 5));
    }

    #[test]
    fn odd_inputs_still_give_labels() {
        for (config, slot) in [
            ("", 1),
            ("-", 1),
            ("UPPER", 1),
            ("é", 1),
            ("x", -5),
            ("x", i64::MIN),
            ("x", i64::MAX),
        ] {
            let name = session_name_for_slot(config, slot);
            assert!(is_dns_label(&name), "{config:?} {slot}: {name}");
            assert!(name.ends_with(&format!("-{slot}")), "{name}");
        }
    }

    #[test]
    fn long_sessions_keep_the_slot_in_job_and_pvc_names() {
        let session = session_name_for_slot(&"c".repeat(100), 1_700_000_000);
        for job in [backup_job_name(&session), restore_job_name(&session)] {
            assert!(is_dns_label(&job), "{job}");
            assert!(job.starts_with("cairn-"), "{job}");
            assert!(job.ends_with("-1700000000"), "{job}");
        }
        let template = "t".repeat(MAX_TEMPLATE_NAME_LEN);
        let pvc = interim_pvc_name(&session, &template);
        assert!(is_dns_label(&pvc), "{pvc}");
        assert!(pvc.ends_with(&format!("-1700000000-{template}")), "{pvc}");
        assert!(pvc.starts_with("ccccccc-"), "{pvc}");
        // A template longer than admission allows still gives a valid name.
        let pvc = interim_pvc_name(&session, &"t".repeat(63));
        assert!(is_dns_label(&pvc), "{pvc}");
        let pvc = interim_pvc_name(&session, "Not A Label");
        assert!(is_dns_label(&pvc), "{pvc}");
    }

    #[test]
    fn dns_checks() {
        for s in ["a", "a-b", "0", "a1-2b", &"a".repeat(63)] {
            assert!(is_dns_label(s), "{s}");
            assert!(is_dns_subdomain(s), "{s}");
        }
        for s in ["", "-a", "a-", "A", "a.b", "a_b", "é", &"a".repeat(64)] {
            assert!(!is_dns_label(s), "{s}");
        }
        assert!(is_dns_subdomain("a.b-c.d"));
        assert!(is_dns_subdomain(&"a".repeat(253)));
        for s in ["", ".", "a.", ".a", "a..b", "a.-b", "A.b", &"a".repeat(254)] {
            assert!(!is_dns_subdomain(s), "{s}");
        }
    }

    #[test]
    fn label_values() {
        for s in ["", "a", "BackupConfiguration", "a.b_c-d", &"x".repeat(63)] {
            assert!(is_label_value(s), "{s}");
            assert_eq!(label_value(s), s);
        }
        for s in ["-a", "a_", "a b", "é", &"x".repeat(64), "__", "/"] {
            assert!(!is_label_value(s), "{s}");
            let v = label_value(s);
            assert!(is_label_value(&v) && !v.is_empty(), "{s}: {v}");
        }
        assert_eq!(label_value("a b"), format!("a-b-{}", short_hash("a b")));
    }

    fn subdomain() -> impl Strategy<Value = String> {
        "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?){0,4}"
            .prop_filter("at most 253 characters", |s| s.len() <= MAX_SUBDOMAIN_LEN)
    }

    proptest! {
        #[test]
        fn session_names_are_labels_ending_in_the_slot(
            config in subdomain(),
            slot in 0i64..=4_102_444_800,
        ) {
            prop_assert!(is_dns_subdomain(&config));
            let name = session_name_for_slot(&config, slot);
            prop_assert!(is_dns_label(&name), "{}", name);
            prop_assert!(name.ends_with(&format!("-{slot}")), "{}", name);
            prop_assert_eq!(&name, &session_name_for_slot(&config, slot));
            if is_dns_label(&config) && config.len() + 11 <= MAX_LABEL_LEN {
                prop_assert_eq!(&name, &format!("{config}-{slot}"));
            }

            for job in [backup_job_name(&name), restore_job_name(&name)] {
                prop_assert!(is_dns_label(&job), "{}", job);
                prop_assert!(job.starts_with("cairn-"), "{}", job);
                prop_assert!(job.ends_with(&format!("-{slot}")), "{}", job);
            }
        }

        #[test]
        fn pvc_names_keep_slot_and_template(
            config in subdomain(),
            slot in 0i64..=4_102_444_800,
            template in "[a-z0-9]([-a-z0-9]{0,36}[a-z0-9])?",
        ) {
            let session = session_name_for_slot(&config, slot);
            let pvc = interim_pvc_name(&session, &template);
            prop_assert!(is_dns_label(&pvc), "{}", pvc);
            prop_assert!(pvc.ends_with(&format!("-{slot}-{template}")), "{}", pvc);
        }

        #[test]
        fn any_input_gives_labels(session in any::<String>(), template in any::<String>(), slot in any::<i64>()) {
            prop_assert!(is_dns_label(&session_name_for_slot(&session, slot)));
            prop_assert!(is_dns_label(&backup_job_name(&session)));
            prop_assert!(is_dns_label(&restore_job_name(&session)));
            prop_assert!(is_dns_label(&interim_pvc_name(&session, &template)));
            let v = label_value(&session);
            prop_assert!(is_label_value(&v), "{}", v);
        }

        #[test]
        fn distinct_configs_give_distinct_sessions(
            a in subdomain(),
            b in subdomain(),
            common in "[a-z0-9]{40,80}",
            slot in 0i64..=4_102_444_800,
        ) {
            prop_assume!(a != b);
            // Also with a long shared start, so both are cut to the same kept prefix and only the
            // hash tells them apart: the one way two names can collide is a 20-bit hash
            // collision, which is left out here so the test is not flaky.
            for (a, b) in [(a.clone(), b.clone()), (format!("{common}{a}"), format!("{common}{b}"))] {
                let (sa, sb) = (session_name_for_slot(&a, slot), session_name_for_slot(&b, slot));
                if short_hash(&a) != short_hash(&b) {
                    prop_assert_ne!(&sa, &sb);
                }
                let (stem_a, stem_b) = (split_slot(&sa).0, split_slot(&sb).0);
                if short_hash(stem_a) != short_hash(stem_b) {
                    prop_assert_ne!(backup_job_name(&sa), backup_job_name(&sb));
                    prop_assert_ne!(interim_pvc_name(&sa, "t"), interim_pvc_name(&sb, "t"));
                }
            }
        }
    }

    #[test]
    fn sample_of_long_configs_gives_distinct_names() {
        // 200 configurations that share a 58-char start: every one is shortened to the same
        // kept prefix, so this exercises the hash alone. Deterministic, so not flaky.
        let shared = "backup-configuration-of-the-elasticsearch-cluster-in-prod-";
        let configs: Vec<String> = (0..200).map(|i| format!("{shared}{i}")).collect();
        let sessions: BTreeSet<String> = configs
            .iter()
            .map(|c| session_name_for_slot(c, 1_700_000_000))
            .collect();
        assert_eq!(sessions.len(), configs.len());
        let jobs: BTreeSet<String> = sessions.iter().map(|s| backup_job_name(s)).collect();
        assert_eq!(jobs.len(), configs.len());
        let pvcs: BTreeSet<String> = sessions
            .iter()
            .map(|s| interim_pvc_name(s, "scratch"))
            .collect();
        assert_eq!(pvcs.len(), configs.len());
        // Sessions of one configuration differ by slot, in the Job names too.
        let config = &configs[0];
        let jobs: BTreeSet<String> = (0..200)
            .map(|slot| backup_job_name(&session_name_for_slot(config, 1_700_000_000 + slot)))
            .collect();
        assert_eq!(jobs.len(), 200);
    }

    #[test]
    fn humane_numbers() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
