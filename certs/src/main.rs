//! `cairn-certs`: serving certificates for the cairn webhook.
//!
//! - `bootstrap`: what the install's bootstrap Job (or a periodic CronJob, for rotation) runs:
//!   keep the webhook's TLS Secret valid and put its CA into the webhook configurations.
//! - `generate`: write a CA and a serving certificate to a directory, for running the webhook
//!   outside a cluster (tests, the demo).
//!
//! Plain std argument parsing: two subcommands do not warrant a parser dependency.

#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use cairn_certs::{CertRequest, ensure_secret, generate_ca, inject_ca_bundle, issue_serving_cert};

const USAGE: &str = "\
cairn-certs: serving certificates for the cairn admission webhook

USAGE:
    cairn-certs bootstrap [OPTIONS]
        Create or rotate the webhook's kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt; the CA
        in Secret <secret>-ca) and set the caBundle of the webhook configurations. Idempotent:
        rotates only what is missing, unparsable, for other names or near expiry.
        --namespace NS             namespace of the Service and Secrets [cairn-system]
        --service NAME             webhook Service [cairn-webhook]
        --secret NAME              serving Secret [cairn-webhook-tls]
        --validating NAME          ValidatingWebhookConfiguration; \"\" skips [cairn-validating]
        --mutating NAME            MutatingWebhookConfiguration; \"\" skips [cairn-mutating]
        --validity-days N          serving certificate lifetime [365]
        --ca-validity-days N       CA lifetime [3650]
        --renew-before-days N      renew this long before expiry [30]

    cairn-certs generate --out-dir DIR (--dns NAME | --ip ADDR)... [OPTIONS]
        Write ca.crt, tls.crt and tls.key (mode 0600) into DIR, for a new CA.
        --dns NAME                 DNS name (repeatable, or comma-separated)
        --ip ADDR                  IP address (repeatable, or comma-separated)
        --validity-days N          lifetime of the CA and certificate [365]
        --ca-common-name CN        [cairn development CA]

    cairn-certs help
";

const DAY: Duration = Duration::from_secs(24 * 3600);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-certs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    // kube builds its TLS on ring; one process-wide provider, chosen before any TLS use.
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow!("a rustls crypto provider was already installed"))?;

    let Some((command, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        bail!("missing command");
    };
    match command.as_str() {
        "bootstrap" => bootstrap(&Flags::parse(rest, BOOTSTRAP_FLAGS)?),
        "generate" => generate(&Flags::parse(rest, GENERATE_FLAGS)?),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("{USAGE}");
            bail!("unknown command {other:?}")
        }
    }
}

const BOOTSTRAP_FLAGS: &[&str] = &[
    "namespace",
    "service",
    "secret",
    "validating",
    "mutating",
    "validity-days",
    "ca-validity-days",
    "renew-before-days",
];

fn bootstrap(flags: &Flags) -> Result<()> {
    let namespace = flags.one("namespace").unwrap_or("cairn-system");
    let service = flags.one("service").unwrap_or("cairn-webhook");
    let secret = flags.one("secret").unwrap_or("cairn-webhook-tls");
    let validating = flags.one("validating").unwrap_or("cairn-validating");
    let mutating = flags.one("mutating").unwrap_or("cairn-mutating");
    let request = CertRequest {
        validity: flags.days("validity-days", 365)?,
        ca_validity: flags.days("ca-validity-days", 3650)?,
        renew_before: flags.days("renew-before-days", 30)?,
        ..CertRequest::for_service(service, namespace)
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API")?;
        let plan = ensure_secret(&client, namespace, secret, &request).await?;
        match &plan.ca_rotation {
            Some(why) => println!("CA: new, in Secret {namespace}/{secret}-ca ({why})"),
            None => println!("CA: kept"),
        }
        match &plan.serving_rotation {
            Some(why) => {
                println!("serving certificate: new, in Secret {namespace}/{secret} ({why})")
            }
            None => println!("serving certificate: kept"),
        }
        let changed = inject_ca_bundle(&client, validating, mutating, &plan.ca_bundle).await?;
        println!("caBundle: {changed} webhook entries updated");
        Ok(())
    })
}

const GENERATE_FLAGS: &[&str] = &["dns", "ip", "out-dir", "validity-days", "ca-common-name"];

fn generate(flags: &Flags) -> Result<()> {
    let out_dir = PathBuf::from(flags.one("out-dir").context("--out-dir is required")?);
    let dns: Vec<String> = flags.list("dns").map(str::to_string).collect();
    let ips = flags
        .list("ip")
        .map(|ip| ip.parse::<IpAddr>().with_context(|| format!("--ip {ip:?}")))
        .collect::<Result<Vec<_>>>()?;
    if dns.is_empty() && ips.is_empty() {
        bail!("give at least one --dns or --ip");
    }
    let validity = flags.days("validity-days", 365)?;
    let common_name = flags
        .one("ca-common-name")
        .unwrap_or("cairn development CA");

    let ca = generate_ca(common_name, validity)?;
    let serving = issue_serving_cert(&ca, &dns, &ips, validity)?;
    let paths = cairn_certs::write_files(&out_dir, &serving)?;
    for path in paths {
        println!("{}", path.display());
    }
    Ok(())
}

/// `--name value` / `--name=value` pairs, in order; only the names a command knows.
struct Flags(Vec<(String, String)>);

impl Flags {
    fn parse(args: &[String], known: &[&str]) -> Result<Self> {
        let mut pairs = Vec::new();
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                bail!("unexpected argument {arg:?} (see cairn-certs help)");
            };
            let (name, value) = match flag.split_once('=') {
                Some((name, value)) => (name, value.to_string()),
                None => {
                    let value = iter
                        .next()
                        .with_context(|| format!("--{flag} needs a value"))?;
                    (flag, value.clone())
                }
            };
            if !known.contains(&name) {
                bail!("unknown option --{name} (see cairn-certs help)");
            }
            pairs.push((name.to_string(), value));
        }
        Ok(Self(pairs))
    }

    /// The last value given for `name`.
    fn one(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable flag, commas splitting further.
    fn list<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    fn days(&self, name: &str, default: u64) -> Result<Duration> {
        let days = match self.one(name) {
            None => default,
            Some(v) => v
                .parse::<u64>()
                .with_context(|| format!("--{name} {v:?} is not a whole number of days"))?,
        };
        days.checked_mul(DAY.as_secs())
            .map(Duration::from_secs)
            .with_context(|| format!("--{name} {days} is too large"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_take_both_forms_and_repeat() {
        let flags = Flags::parse(
            &args(&[
                "--dns",
                "a",
                "--dns=b,c",
                "--ip",
                "127.0.0.1",
                "--validity-days=2",
            ]),
            GENERATE_FLAGS,
        )
        .expect("parse");
        assert_eq!(flags.list("dns").collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(flags.one("ip"), Some("127.0.0.1"));
        assert_eq!(flags.days("validity-days", 365).expect("days"), 2 * DAY);
        assert_eq!(flags.days("missing", 3).expect("default"), 3 * DAY);
    }

    #[test]
    fn flags_refuse_unknown_and_dangling() {
        assert!(Flags::parse(&args(&["--nope", "x"]), GENERATE_FLAGS).is_err());
        assert!(Flags::parse(&args(&["--dns"]), GENERATE_FLAGS).is_err());
        assert!(Flags::parse(&args(&["stray"]), GENERATE_FLAGS).is_err());
        let flags =
            Flags::parse(&args(&["--validity-days", "soon"]), GENERATE_FLAGS).expect("parse");
        assert!(flags.days("validity-days", 1).is_err());
    }
}
