//! Where the repository lives and what its backend needs: restic's location notation, the
//! options, the opendal settings read from the repository Secret's keys, the repository CA and
//! password. The bottom layer: it uses nothing of the repository code above it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{AgentError, Result};

/// Where the repository lives, in restic's notation: the type the resolver writes with.
pub use cairn_api::location::Location;

/// `--repository`, read.
pub fn parse_location(s: &str) -> Result<Location> {
    s.parse()
        .map_err(|e| AgentError::Usage(format!("--repository: {e}")))
}

/// What, besides the location, the backend needs.
#[derive(Clone, Debug, Default)]
pub struct RepoOptions {
    pub region: Option<String>,
    pub insecure_tls: bool,
    pub max_connections: Option<u32>,
    pub cache_dir: Option<PathBuf>,
    pub no_cache: bool,
}

/// Reads an environment variable; empty counts as unset.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

// Credentials come from the repository's storage Secret only: never the identity of the node
// or of a ServiceAccount (which a pod's writer may choose), which might reach other tenants'
// buckets.
const AMBIENT_S3: &str = "S3: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the storage Secret (cairn does not use the node's or a ServiceAccount's cloud identity)";
const AMBIENT_GCS: &str = "GCS: GOOGLE_SERVICE_ACCOUNT_JSON_KEY (or GOOGLE_APPLICATION_CREDENTIALS) in the storage Secret (cairn does not use the node's or a ServiceAccount's cloud identity)";
const AMBIENT_AZURE: &str = "Azure: AZURE_ACCOUNT_KEY or AZURE_ACCOUNT_SAS in the storage Secret (cairn does not use the node's or a ServiceAccount's cloud identity)";

/// The opendal options for a cloud location (service name and its settings). Secrets come from
/// the repository Secret's keys in the environment, as restic reads them.
pub fn opendal_options(
    loc: &Location,
    opts: &RepoOptions,
) -> Result<Option<(&'static str, BTreeMap<String, String>)>> {
    options_from(loc, opts, &env)
}

/// [`opendal_options`] with the repository Secret's keys read through `env`.
fn options_from(
    loc: &Location,
    opts: &RepoOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(&'static str, BTreeMap<String, String>)>> {
    let keys = Keys(env);
    let mut o = BTreeMap::new();
    let service = match loc {
        Location::Local(_) | Location::Rest { .. } => return Ok(None),
        Location::S3 {
            endpoint,
            bucket,
            prefix,
        } => s3(&mut o, &keys, opts, endpoint, bucket, prefix)?,
        Location::Gcs { bucket, prefix } => gcs(&mut o, &keys, bucket, prefix)?,
        Location::Azure { container, prefix } => azure(&mut o, &keys, container, prefix)?,
        Location::B2 { bucket, prefix } => b2(&mut o, &keys, bucket, prefix)?,
        Location::Swift { container, prefix } => swift(&mut o, &keys, container, prefix)?,
    };
    Ok(Some((service, o)))
}

/// The repository Secret's keys.
struct Keys<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Keys<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
    }

    /// A key that must be there: `what` says who needs it.
    fn need(&self, name: &str, what: &str) -> Result<String> {
        self.get(name).ok_or_else(|| {
            AgentError::Credentials(format!(
                "{name} is not set: the repository Secret needs it for {what}"
            ))
        })
    }
}

type Options = BTreeMap<String, String>;

fn root(prefix: &str) -> String {
    format!("/{prefix}")
}

fn s3(
    o: &mut Options,
    keys: &Keys<'_>,
    opts: &RepoOptions,
    endpoint: &str,
    bucket: &str,
    prefix: &str,
) -> Result<&'static str> {
    o.insert("bucket".into(), bucket.into());
    o.insert("root".into(), root(prefix));
    o.insert("endpoint".into(), endpoint.into());
    o.insert(
        "region".into(),
        opts.region
            .clone()
            .filter(|r| !r.is_empty())
            .or_else(|| keys.get("AWS_DEFAULT_REGION"))
            .or_else(|| keys.get("AWS_REGION"))
            .unwrap_or_else(|| "us-east-1".into()),
    );
    // Only what the Secret says: no ~/.aws files, no instance metadata, no web identity
    // of the node or of a ServiceAccount someone chose for the pod.
    o.insert("disable_config_load".into(), "true".into());
    o.insert("disable_ec2_metadata".into(), "true".into());
    o.insert(
        "access_key_id".into(),
        keys.need("AWS_ACCESS_KEY_ID", AMBIENT_S3)?,
    );
    o.insert(
        "secret_access_key".into(),
        keys.need("AWS_SECRET_ACCESS_KEY", AMBIENT_S3)?,
    );
    if let Some(t) = keys.get("AWS_SESSION_TOKEN") {
        o.insert("session_token".into(), t);
    }
    Ok("s3")
}

fn gcs(o: &mut Options, keys: &Keys<'_>, bucket: &str, prefix: &str) -> Result<&'static str> {
    o.insert("bucket".into(), bucket.into());
    o.insert("root".into(), root(prefix));
    if let Some(key) = keys.get("GOOGLE_SERVICE_ACCOUNT_JSON_KEY") {
        use base64::Engine;
        o.insert(
            "credential".into(),
            base64::engine::general_purpose::STANDARD.encode(key),
        );
    } else {
        o.insert(
            "credential_path".into(),
            keys.need("GOOGLE_APPLICATION_CREDENTIALS", AMBIENT_GCS)?,
        );
    }
    o.insert("disable_config_load".into(), "true".into());
    o.insert("disable_vm_metadata".into(), "true".into());
    Ok("gcs")
}

fn azure(o: &mut Options, keys: &Keys<'_>, container: &str, prefix: &str) -> Result<&'static str> {
    let account = keys.need("AZURE_ACCOUNT_NAME", "Azure")?;
    o.insert("container".into(), container.into());
    o.insert("root".into(), root(prefix));
    let suffix = keys
        .get("AZURE_ENDPOINT_SUFFIX")
        .unwrap_or_else(|| "core.windows.net".into());
    o.insert(
        "endpoint".into(),
        format!("https://{account}.blob.{suffix}"),
    );
    o.insert("account_name".into(), account);
    if let Some(key) = keys.get("AZURE_ACCOUNT_KEY") {
        o.insert("account_key".into(), key);
    } else {
        o.insert(
            "sas_token".into(),
            keys.need("AZURE_ACCOUNT_SAS", AMBIENT_AZURE)?,
        );
    }
    Ok("azblob")
}

/// B2 with Stash's keys (`B2_ACCOUNT_ID`, `B2_ACCOUNT_KEY`), plus the bucket's id: opendal
/// addresses a bucket by id, which neither restic's notation nor Stash's Secret carries.
fn b2(o: &mut Options, keys: &Keys<'_>, bucket: &str, prefix: &str) -> Result<&'static str> {
    o.insert("bucket".into(), bucket.into());
    o.insert("root".into(), root(prefix));
    o.insert(
        "application_key_id".into(),
        keys.need("B2_ACCOUNT_ID", "B2 (the application key's id)")?,
    );
    o.insert(
        "application_key".into(),
        keys.need("B2_ACCOUNT_KEY", "B2 (the application key)")?,
    );
    o.insert(
        "bucket_id".into(),
        keys.need(
            "B2_BUCKET_ID",
            "B2: cairn's B2 client addresses the bucket by its id, not its name (add the \
             bucketId that `b2 bucket get <name>` prints)",
        )?,
    );
    Ok("b2")
}

/// Stash's Swift keys that ask for a keystone login (v1, v2 or v3), which cairn does not make.
const SWIFT_LOGIN_KEYS: [&str; 6] = [
    "ST_AUTH",
    "ST_USER",
    "ST_KEY",
    "OS_AUTH_URL",
    "OS_USERNAME",
    "OS_PASSWORD",
];

/// Swift with a pre-authenticated storage URL and token (Stash's `OS_STORAGE_URL` and
/// `OS_AUTH_TOKEN`): opendal takes no keystone credentials.
fn swift(o: &mut Options, keys: &Keys<'_>, container: &str, prefix: &str) -> Result<&'static str> {
    let (Some(url), Some(token)) = (keys.get("OS_STORAGE_URL"), keys.get("OS_AUTH_TOKEN")) else {
        let login = SWIFT_LOGIN_KEYS.iter().find(|k| keys.get(k).is_some());
        return Err(AgentError::Credentials(match login {
            Some(key) => format!(
                "Swift: the repository Secret's {key} asks for a keystone login, which cairn \
                 does not make: give a pre-authenticated OS_STORAGE_URL and OS_AUTH_TOKEN \
                 instead (`swift auth` prints them)"
            ),
            None => "Swift: OS_STORAGE_URL and OS_AUTH_TOKEN are not set: the repository \
                     Secret needs both (a pre-authenticated storage URL and its token)"
                .into(),
        }));
    };
    o.insert("container".into(), container.into());
    o.insert("root".into(), root(prefix));
    o.insert("endpoint".into(), url);
    o.insert("token".into(), token);
    Ok("swift")
}

/// Refuses `--insecure-tls` where it cannot be honoured: restic's REST server, whose client
/// rustic builds inside (object stores use cairn's client, see [`crate::cloud`]).
pub fn check_insecure_tls(loc: &Location, opts: &RepoOptions) -> Result<()> {
    if opts.insecure_tls && matches!(loc, Location::Rest { .. }) {
        return Err(AgentError::Usage(
            "insecureTLS is not supported for a REST server repository: give the CA \
             certificate in the repository Secret's CA_CERT_DATA instead"
                .into(),
        ));
    }
    Ok(())
}

/// `CA_CERT_DATA` of the repository Secret: opendal's HTTP client trusts the platform roots,
/// which `SSL_CERT_FILE` replaces; we write the system bundle plus this CA there. Must run
/// before any thread starts (it sets an environment variable).
pub fn install_repository_ca(tmp_dir: &std::path::Path) -> Result<()> {
    let Some(ca) = env("CA_CERT_DATA") else {
        return Ok(());
    };
    crate::tls::parse_pem(&ca)?;
    let mut bundle = String::new();
    for sys in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ] {
        if let Ok(text) = std::fs::read_to_string(sys) {
            bundle.push_str(&text);
            bundle.push('\n');
            break;
        }
    }
    bundle.push_str(&ca);
    bundle.push('\n');
    std::fs::create_dir_all(tmp_dir).map_err(|e| AgentError::io("CAIRN_TMP_DIR", e))?;
    let file = tmp_dir.join("repository-ca.pem");
    std::fs::write(&file, bundle).map_err(|e| AgentError::io("write repository CA", e))?;
    // SAFETY: called from main before the runtime or any other thread exists.
    unsafe {
        std::env::set_var("SSL_CERT_FILE", &file);
    }
    Ok(())
}

/// The repository password: `RESTIC_PASSWORD` or the file `RESTIC_PASSWORD_FILE` names.
pub fn password() -> Result<String> {
    if let Some(p) = std::env::var_os("RESTIC_PASSWORD") {
        return Ok(p.to_string_lossy().into_owned());
    }
    if let Some(f) = env("RESTIC_PASSWORD_FILE") {
        let text = std::fs::read_to_string(&f)
            .map_err(|e| AgentError::Credentials(format!("RESTIC_PASSWORD_FILE {f}: {e}")))?;
        return Ok(text.trim_end_matches(['\n', '\r']).to_string());
    }
    Err(AgentError::Credentials(
        "RESTIC_PASSWORD is not set: the repository Secret must hold it".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_options() {
        let loc = parse_location("s3:http://127.0.0.1:9000/bucket/pre").unwrap();
        let opts = RepoOptions {
            region: Some("eu-west-1".into()),
            max_connections: Some(4),
            ..Default::default()
        };
        let keys = |k: &str| {
            Some(match k {
                "AWS_ACCESS_KEY_ID" => "id".to_string(),
                "AWS_SECRET_ACCESS_KEY" => "secret".to_string(),
                _ => return None,
            })
        };
        let (service, o) = options_from(&loc, &opts, &keys).unwrap().unwrap();
        assert_eq!(service, "s3");
        assert_eq!(o["disable_ec2_metadata"], "true");
        assert_eq!(o["access_key_id"], "id");
        // Without keys: refused, never the node's or a ServiceAccount's identity.
        let err = options_from(&loc, &opts, &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
        let gcs = parse_location("gs:bucket:/p").unwrap();
        assert!(options_from(&gcs, &opts, &|_| None).is_err());
        assert_eq!(o["bucket"], "bucket");
        assert_eq!(o["root"], "/pre");
        assert_eq!(o["endpoint"], "http://127.0.0.1:9000");
        assert_eq!(o["region"], "eu-west-1");
    }

    /// The options for `location` with the Secret holding `keys`.
    fn options_with(location: &str, keys: &[(&str, &str)]) -> Result<Options> {
        let loc = parse_location(location)?;
        let env = |k: &str| {
            keys.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        };
        Ok(options_from(&loc, &RepoOptions::default(), &env)?
            .map(|(_, o)| o)
            .unwrap_or_default())
    }

    #[test]
    fn b2_reads_stashs_keys_and_names_the_bucket_id() {
        let stash = [("B2_ACCOUNT_ID", "id"), ("B2_ACCOUNT_KEY", "key")];
        let err = options_with("b2:bucket:pre", &stash)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("B2_BUCKET_ID") && err.contains("bucketId"),
            "{err}"
        );
        assert!(!err.contains("key\""), "{err}");
        let mut keys = stash.to_vec();
        keys.push(("B2_BUCKET_ID", "4a48fe8875c6214145260818"));
        let o = options_with("b2:bucket:pre", &keys).unwrap();
        assert_eq!(o["application_key_id"], "id");
        assert_eq!(o["application_key"], "key");
        assert_eq!(o["bucket"], "bucket");
        assert_eq!(o["bucket_id"], "4a48fe8875c6214145260818");
        assert_eq!(o["root"], "/pre");
        let err = options_with("b2:bucket:pre", &[("B2_ACCOUNT_KEY", "key")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("B2_ACCOUNT_ID"), "{err}");
    }

    #[test]
    fn swift_takes_a_storage_url_and_token_and_names_a_login() {
        let o = options_with(
            "swift:container:/pre",
            &[
                ("OS_STORAGE_URL", "https://swift.example/v1/AUTH_x"),
                ("OS_AUTH_TOKEN", "tok"),
                // A login next to them is not needed.
                ("OS_AUTH_URL", "https://keystone.example/v3"),
            ],
        )
        .unwrap();
        assert_eq!(o["endpoint"], "https://swift.example/v1/AUTH_x");
        assert_eq!(o["token"], "tok");
        assert_eq!(o["container"], "container");
        assert_eq!(o["root"], "/pre");
        // Keystone v1 (ST_*), v2/v3 (OS_*): the key is named, and what cairn needs instead.
        for (key, value) in [
            ("ST_AUTH", "https://auth.example/v1.0"),
            ("OS_AUTH_URL", "https://keystone.example/v3"),
            ("OS_PASSWORD", "pw-secret"),
        ] {
            let err = options_with("swift:container:/pre", &[(key, value)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
            assert!(
                err.contains("OS_STORAGE_URL") && err.contains("OS_AUTH_TOKEN"),
                "{err}"
            );
            assert!(!err.contains(value), "the secret is in the message: {err}");
        }
        let err = options_with("swift:container:/pre", &[("OS_AUTH_TOKEN", "tok")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("OS_STORAGE_URL"), "{err}");
    }
}
