//! Structure-aware fuzzing of admission: well-formed objects of every kind (the shipped examples,
//! the broken examples and the catalog), mutated (fields deleted, replaced by another type, huge
//! strings, nesting far deeper than any object, arrays of thousands, unicode), wrapped in
//! AdmissionReviews (themselves sometimes mutated) and fed to the decoder, to both endpoints of
//! the review, and to every kind's `Validate` directly. The properties: no panic (a stack
//! overflow aborts the run), an answer always comes back for the request's uid, a denial says
//! why, and every validator error names its field.
//!
//! Time-capped rather than case-capped: `CAIRN_FUZZ_SECS` (default 60) split evenly over the
//! targets below; before a release run it longer, e.g. `CAIRN_FUZZ_SECS=3600 cargo test --release
//! -p cairn-webhook --test fuzz -- --nocapture` (README, Testing).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use cairn_api::manifest::{Object, parse_documents, typed};
use cairn_api::resolve::InstallSettings;
use cairn_api::validation::{LookupTable, Policy, Validate, Verdict};
use cairn_api::{BackupConfiguration, BackupSession, Function, Repository, RestoreSession, Task};
use cairn_webhook::admission::{Endpoint, Outcome, review};
use cairn_webhook::bounds::MAX_BODY_BYTES;
use cairn_webhook::server::decode;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseResult, TestRunner};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const KINDS: [&str; 6] = [
    "Repository",
    "BackupConfiguration",
    "BackupSession",
    "RestoreSession",
    "Task",
    "Function",
];

fn manifests() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

/// Every shipped object of a cairn kind, as JSON: the seeds the mutations start from.
fn seeds() -> &'static [(String, Value)] {
    static SEEDS: OnceLock<Vec<(String, Value)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds = Vec::new();
        for dir in ["examples", "examples/broken", "catalog"] {
            for entry in std::fs::read_dir(manifests().join(dir)).expect("manifests") {
                let path = entry.expect("entry").path();
                if path.extension().is_none_or(|e| e != "yaml") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("readable");
                for doc in parse_documents(&text).expect("yaml") {
                    let kind = doc["kind"].as_str().unwrap_or_default().to_string();
                    if KINDS.contains(&kind.as_str()) {
                        seeds.push((kind, doc));
                    }
                }
            }
        }
        // No BackupSession is shipped (the controller writes them): one as a user would.
        seeds.push((
            "BackupSession".into(),
            json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "BackupSession",
                   "metadata": {"name": "manual", "namespace": "demo"},
                   "spec": {"invoker": {"apiGroup": "cairn.dev", "kind": "BackupConfiguration", "name": "es-backup"}}}),
        ));
        for kind in KINDS {
            assert!(seeds.iter().any(|(k, _)| k == kind), "no seed of {kind}");
        }
        seeds
    })
}

/// The shipped examples and catalog as lookups (what the watch caches hold in a demo cluster).
fn lookups() -> &'static LookupTable {
    static TABLE: OnceLock<LookupTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = LookupTable::default().with_namespace("demo", &[]);
        for (_, doc) in seeds() {
            table = match typed(doc.clone()) {
                Ok(Object::Repository(o)) => table.with_repository(o),
                Ok(Object::BackupConfiguration(o)) => table.with_backup_configuration(o),
                Ok(Object::Task(o)) => table.with_task(o),
                Ok(Object::Function(o)) => table.with_function(o),
                _ => table,
            };
        }
        table
    })
}

/// One change to a JSON tree, at the node `at` picks among all of its nodes.
#[derive(Clone, Debug)]
enum Mutation {
    Delete(Index),
    /// Another value, most often of another type.
    Replace(Index, Value),
    /// A string of `len` copies of `c`.
    HugeString(Index, usize, char),
    /// `depth` arrays (or objects) nested around the node.
    Nest(Index, usize, bool),
    /// An array of `len` copies of the node.
    Widen(Index, usize),
    /// A value of the node's own type (so the object often keeps its kind's schema and reaches
    /// the rules): this string or this number, the other boolean, an array emptied or its first
    /// item twice.
    Similar(Index, String, i64, bool),
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(json!(u64::MAX)),
        Just(json!(1e308)),
        Just(json!(-0.5)),
        "\\PC{0,24}".prop_map(Value::from),
        prop_oneof![
            Just("\u{0}"),
            Just("\u{202e}evil"),
            Just("ß\u{301}"),
            Just("🦀🦀"),
            Just("../../etc"),
            Just("${AGENT_IMAGE}"),
            Just("$(echo)"),
            Just("0 1 * * * *"),
            Just("-1h"),
            Just(" "),
        ]
        .prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
        Just(json!([{}])),
        Just(json!({"name": "x"})),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => any::<Index>().prop_map(Mutation::Delete),
        5 => (any::<Index>(), leaf()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        1 => (
            any::<Index>(),
            prop_oneof![1usize..300, 4_000usize..70_000, 500_000usize..1_500_000],
            prop_oneof![Just('a'), Just('é'), Just('\u{10ffff}'), Just('"'), Just('\\')],
        )
            .prop_map(|(i, n, c)| Mutation::HugeString(i, n, c)),
        1 => (any::<Index>(), prop_oneof![5usize..40, 100usize..200], any::<bool>())
            .prop_map(|(i, d, arrays)| Mutation::Nest(i, d, arrays)),
        1 => (any::<Index>(), prop_oneof![2usize..20, 1_000usize..20_000])
            .prop_map(|(i, n)| Mutation::Widen(i, n)),
        8 => (
            any::<Index>(),
            prop_oneof![
                "\\PC{0,40}",
                "[a-z0-9-]{0,70}",
                Just(String::new()),
                Just("${REPOSITORY_SECRET_NAME}".to_string()),
                Just("--url=http://x".to_string()),
                Just("1.5Gi".to_string()),
                Just("*/0 * * * *".to_string()),
            ],
            prop_oneof![any::<i64>(), -2i64..3, Just(i64::MAX)],
            any::<bool>(),
        )
            .prop_map(|(i, s, n, empty)| Mutation::Similar(i, s, n, empty)),
    ]
}

/// JSON pointers of every node below the root.
fn pointers(value: &Value, at: &str, out: &mut Vec<String>) {
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v))
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => return,
    };
    for (key, child) in children {
        let pointer = format!("{at}/{key}");
        out.push(pointer.clone());
        pointers(child, &pointer, out);
    }
}

impl Mutation {
    fn index(&self) -> &Index {
        match self {
            Mutation::Delete(i)
            | Mutation::Replace(i, _)
            | Mutation::HugeString(i, _, _)
            | Mutation::Nest(i, _, _)
            | Mutation::Widen(i, _)
            | Mutation::Similar(i, _, _, _) => i,
        }
    }

    fn apply(&self, root: &mut Value) {
        let mut all = Vec::new();
        pointers(root, "", &mut all);
        if all.is_empty() {
            return;
        }
        let pointer = self.index().get(&all).clone();
        if let Mutation::Delete(_) = self {
            let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
            let key = key.replace("~1", "/").replace("~0", "~");
            match root.pointer_mut(parent) {
                Some(Value::Object(map)) => {
                    map.remove(&key);
                }
                Some(Value::Array(items)) => {
                    if let Ok(i) = key.parse::<usize>() {
                        items.remove(i);
                    }
                }
                _ => {}
            }
            return;
        }
        let Some(node) = root.pointer_mut(&pointer) else {
            return;
        };
        *node = match self {
            Mutation::Delete(_) => unreachable!("handled above"),
            Mutation::Replace(_, v) => v.clone(),
            Mutation::HugeString(_, n, c) => Value::String(std::iter::repeat_n(*c, *n).collect()),
            Mutation::Nest(_, depth, arrays) => {
                let mut v = node.take();
                for _ in 0..*depth {
                    v = if *arrays {
                        json!([v])
                    } else {
                        json!({ "spec": v })
                    };
                }
                v
            }
            Mutation::Similar(_, text, number, empty) => match node.take() {
                Value::String(_) => Value::from(text.clone()),
                Value::Number(_) => Value::from(*number),
                Value::Bool(b) => Value::Bool(!b),
                Value::Array(_) if *empty => Value::Array(Vec::new()),
                Value::Array(mut items) => {
                    if let Some(first) = items.first().cloned() {
                        items.push(first);
                    }
                    Value::Array(items)
                }
                other => other,
            },
            Mutation::Widen(_, n) => {
                // At most about the largest body the server accepts, whatever the node holds.
                let size = serde_json::to_vec(node).map_or(1, |b| b.len().max(1));
                Value::Array(vec![node.take(); (*n).min(MAX_BODY_BYTES / size).max(1)])
            }
        };
    }
}

/// A change to the encoded body: not JSON any more, most often.
#[derive(Clone, Debug)]
enum Corruption {
    Truncate(Index),
    Byte(Index, u8),
}

impl Corruption {
    fn apply(&self, body: &mut Vec<u8>) {
        match self {
            Corruption::Truncate(at) => body.truncate(at.index(body.len())),
            Corruption::Byte(at, b) => {
                let i = at.index(body.len());
                body[i] = *b;
            }
        }
    }
}

/// One fuzz case: a seed object, mutated, in a review (mutated too, sometimes), encoded (and
/// corrupted, sometimes).
#[derive(Clone, Debug)]
struct Case {
    seed: Index,
    /// UPDATE with the seed unmutated as the old object, else CREATE.
    update: bool,
    object: Vec<Mutation>,
    envelope: Vec<Mutation>,
    bytes: Option<Corruption>,
}

impl Case {
    fn kind_and_object(&self) -> (&'static str, Value, Value) {
        let (kind, seed) = self.seed.get(seeds());
        let kind = KINDS.iter().find(|k| **k == kind).expect("a kind");
        let mut object = seed.clone();
        for m in &self.object {
            m.apply(&mut object);
        }
        (kind, object, seed.clone())
    }

    fn review(&self) -> (&'static str, Value, Value, Value) {
        let (kind, object, old) = self.kind_and_object();
        let mut review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "fuzz-uid",
                "kind": {"group": "cairn.dev", "version": "v1alpha1", "kind": kind},
                "resource": {"group": "cairn.dev", "version": "v1alpha1", "resource": format!("{}s", kind.to_lowercase())},
                "name": old["metadata"]["name"].clone(),
                "namespace": old["metadata"]["namespace"].clone(),
                "operation": if self.update { "UPDATE" } else { "CREATE" },
                "userInfo": {"username": "fuzz", "groups": ["system:authenticated"]},
                "object": object,
                "oldObject": if self.update { old.clone() } else { Value::Null },
                "dryRun": false
            }
        });
        for m in &self.envelope {
            m.apply(&mut review);
        }
        (kind, review, object, old)
    }
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<Index>(),
        any::<bool>(),
        prop::collection::vec(mutation(), 1..4),
        prop_oneof![4 => Just(vec![]), 1 => prop::collection::vec(mutation(), 1..3)],
        prop_oneof![
            8 => Just(None),
            1 => any::<Index>().prop_map(|i| Some(Corruption::Truncate(i))),
            1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Some(Corruption::Byte(i, b))),
        ],
    )
        .prop_map(|(seed, update, object, envelope, bytes)| Case {
            seed,
            update,
            object,
            envelope,
            bytes,
        })
}

/// The decoder and both endpoints: an answer for the uid, and a denial says why.
fn check_review(case: &Case) -> TestCaseResult {
    let (_, review_json, _, _) = case.review();
    let mut body = serde_json::to_vec(&review_json).expect("serializable");
    if let Some(c) = &case.bytes {
        c.apply(&mut body);
    }
    let req = match decode(&body) {
        Ok(req) => req,
        Err(reason) => {
            prop_assert!(!reason.is_empty());
            STATS.count("review: not decoded");
            return Ok(());
        }
    };
    for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
        let (resp, outcome) = review(endpoint, &req, lookups(), &InstallSettings::default());
        STATS.count(match (endpoint, &outcome) {
            (Endpoint::Validate, Outcome::Denied) => "validate: denied",
            (Endpoint::Validate, _) => "validate: allowed",
            (Endpoint::Mutate, Outcome::Patched) => "mutate: patched",
            (Endpoint::Mutate, Outcome::Denied) => "mutate: denied",
            (Endpoint::Mutate, _) => "mutate: allowed",
        });
        let answer = serde_json::to_value(resp.into_review()).expect("an answer");
        prop_assert_eq!(&answer["response"]["uid"], &json!(req.uid));
        if outcome == Outcome::Denied {
            let message = answer["response"]["status"]["message"]
                .as_str()
                .unwrap_or_default();
            prop_assert!(!message.is_empty(), "a denial without a reason: {answer}");
            // A schema error names where in the object it is.
            if let Some((_, at)) = message.split_once("does not match its schema at ") {
                prop_assert!(!at.starts_with(':'), "no field in {message}");
            }
        }
    }
    Ok(())
}

/// Every kind's `Validate` on the mutated object (when it still has its kind's schema): every
/// error names its field.
fn check_validators(case: &Case) -> TestCaseResult {
    fn run<K: Validate + DeserializeOwned>(object: &Value, old: &Value) -> Option<Verdict> {
        let new = K::deserialize(object).ok()?;
        let old = K::deserialize(old).ok();
        Some(new.validate(old.as_ref(), lookups(), &Policy::default()))
    }
    let (kind, object, old) = case.kind_and_object();
    let verdict = match kind {
        "Repository" => run::<Repository>(&object, &old),
        "BackupConfiguration" => run::<BackupConfiguration>(&object, &old),
        "BackupSession" => run::<BackupSession>(&object, &old),
        "RestoreSession" => run::<RestoreSession>(&object, &old),
        "Task" => run::<Task>(&object, &old),
        _ => run::<Function>(&object, &old),
    };
    STATS.count(match &verdict {
        None => "validators: not of the kind's schema",
        Some(v) if v.allowed() => "validators: admitted",
        Some(_) => "validators: errors",
    });
    for error in verdict.iter().flat_map(|v| &v.errors) {
        prop_assert!(
            !error.path.is_empty() && !error.message.is_empty(),
            "an error without its field: {error:?}"
        );
    }
    Ok(())
}

/// Runs `check` on fresh cases until `budget` is spent; a failure is shrunk and reported.
fn fuzz(name: &str, budget: Duration, check: fn(&Case) -> TestCaseResult) {
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = case();
    let start = Instant::now();
    let mut cases = 0u64;
    while start.elapsed() < budget {
        let tree = strategy.new_tree(&mut runner).expect("a case");
        if let Err(e) = runner.run_one(tree, |c| check(&c)) {
            panic!("{name}: {e}");
        }
        cases += 1;
    }
    println!(
        "{name}: {cases} cases in {:?}; {}",
        start.elapsed(),
        STATS.summary()
    );
    assert!(cases > 0);
}

/// How the cases ended, to see that the fuzzing reaches past the decoder and the schemas.
struct Stats(Mutex<BTreeMap<&'static str, u64>>);

static STATS: Stats = Stats(Mutex::new(BTreeMap::new()));

impl Stats {
    fn count(&self, what: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(what)
            .or_default() += 1;
    }

    fn summary(&self) -> String {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `CAIRN_FUZZ_SECS` (default 60) split over the two targets.
fn budget() -> Duration {
    let secs: f64 = std::env::var("CAIRN_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60.0);
    Duration::from_secs_f64(secs.max(0.1) / 2.0)
}

#[test]
fn decoder_and_review_survive_mutated_reviews() {
    fuzz("review", budget(), check_review);
}

#[test]
fn validators_name_the_field_of_every_error() {
    fuzz("validators", budget(), check_validators);
}
