//! `cairn-certs`: serving certificates for the cairn webhook.
//!
//! - `bootstrap`: what the install's bootstrap Job and its renewal CronJob run: keep the
//!   webhook's TLS Secret valid, rotate the CA in steps, and keep the webhook configurations'
//!   caBundle in step.
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
use cairn_certs::{
    CertRequest, current_bundles, ensure_secret, generate_ca, inject_ca_bundle, issue_serving_cert,
};

const USAGE: &str = "\
cairn-certs: serving certificates for the cairn admission webhook

USAGE:
    cairn-certs bootstrap [OPTIONS]
        Create or renew the webhook's kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt; the CA
        in Secret <secret>-ca) and set the caBundle of the webhook configurations. Idempotent:
        renews only what is missing, unparsable, for other names or near expiry. A CA near
        expiry is rotated over three runs, each at least --overlap after the previous step: a
        next CA joins the caBundle; it signs a new serving certificate; the old CA leaves.
        Durations: Go's syntax (90s, 10m, 8760h) or seconds; the -days flags take days.
        --namespace NS             namespace of the Service and Secrets [cairn-system]
        --service NAME             webhook Service [cairn-webhook]
        --secret NAME              serving Secret [cairn-webhook-tls]
        --validating NAME          ValidatingWebhookConfiguration; \"\" skips [cairn-validating]
        --mutating NAME            MutatingWebhookConfiguration; \"\" skips [cairn-mutating]
        --dns NAME, --ip ADDR      more names for the certificate, beside the Service's
        --validity D               serving certificate lifetime [8760h]; or --validity-days N
        --ca-validity D            CA lifetime [87600h]; or --ca-validity-days N
        --renew-before D           renew the serving certificate this long before expiry [720h];
                                   or --renew-before-days N
        --ca-renew-before D        rotate the CA from this long before expiry [twice
                                   --renew-before]; or --ca-renew-before-days N
        --overlap D                wait between rotation steps [10m]

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
    "dns",
    "ip",
    "validity",
    "validity-days",
    "ca-validity",
    "ca-validity-days",
    "renew-before",
    "renew-before-days",
    "ca-renew-before",
    "ca-renew-before-days",
    "overlap",
];

fn bootstrap(flags: &Flags) -> Result<()> {
    let namespace = flags.one("namespace").unwrap_or("cairn-system");
    let service = flags.one("service").unwrap_or("cairn-webhook");
    let secret = flags.one("secret").unwrap_or("cairn-webhook-tls");
    let validating = flags.one("validating").unwrap_or("cairn-validating");
    let mutating = flags.one("mutating").unwrap_or("cairn-mutating");
    let defaults = CertRequest::for_service(service, namespace);
    let renew_before = flags.duration("renew-before", defaults.renew_before)?;
    let mut dns_names = defaults.dns_names.clone();
    dns_names.extend(flags.list("dns").map(str::to_string));
    let request = CertRequest {
        dns_names,
        ip_addresses: ips(flags)?,
        validity: flags.duration("validity", defaults.validity)?,
        ca_validity: flags.duration("ca-validity", defaults.ca_validity)?,
        renew_before,
        ca_renew_before: flags.duration("ca-renew-before", renew_before.saturating_mul(2))?,
        overlap: flags.duration("overlap", defaults.overlap)?,
        ..defaults
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API")?;
        let trusted = current_bundles(&client, validating, mutating).await?;
        let plan = ensure_secret(&client, namespace, secret, &trusted, &request).await?;
        match &plan.ca_rotation {
            Some(why) => println!("CA: Secret {namespace}/{secret}-ca written ({why})"),
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
    let ips = ips(flags)?;
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

fn ips(flags: &Flags) -> Result<Vec<IpAddr>> {
    flags
        .list("ip")
        .map(|ip| ip.parse::<IpAddr>().with_context(|| format!("--ip {ip:?}")))
        .collect()
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

    /// `--name D` (Go's duration syntax, or seconds) or `--name-days N`; one of them at most.
    fn duration(&self, name: &str, default: Duration) -> Result<Duration> {
        let days_name = format!("{name}-days");
        match (self.one(name), self.one(&days_name)) {
            (Some(_), Some(_)) => bail!("give --{name} or --{days_name}, not both"),
            (Some(v), None) => cairn_api::duration::parse_std_duration(v)
                .map_err(|e| anyhow!("--{name} {v:?}: {e} (a duration such as 90s, 10m or 720h)")),
            (None, Some(_)) => self.days(&days_name, 0),
            (None, None) => Ok(default),
        }
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

    #[test]
    fn durations_take_minutes_or_days_not_both() {
        let parse = |list: &[&str]| Flags::parse(&args(list), BOOTSTRAP_FLAGS).expect("parse");
        let flags = parse(&[
            "--validity",
            "10m",
            "--renew-before=300",
            "--ca-validity-days=2",
        ]);
        let hour = Duration::from_secs(3600);
        assert_eq!(
            flags.duration("validity", hour).expect("10m"),
            Duration::from_secs(600)
        );
        assert_eq!(
            flags.duration("renew-before", hour).expect("300"),
            Duration::from_secs(300)
        );
        assert_eq!(flags.duration("ca-validity", hour).expect("days"), 2 * DAY);
        assert_eq!(flags.duration("overlap", hour).expect("default"), hour);
        let both = parse(&["--validity", "10m", "--validity-days", "1"]);
        assert!(both.duration("validity", hour).is_err());
        let bad = parse(&["--overlap", "soon"]);
        let message = format!("{:#}", bad.duration("overlap", hour).expect_err("bad"));
        assert!(message.contains("--overlap"), "{message}");
    }
}
