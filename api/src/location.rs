//! Where a repository lives, in restic's notation (`local:/path`, `s3:https://host/bucket/prefix`,
//! `gs:bucket:/prefix`, `azure:container:/prefix`, `b2:bucket:prefix`, `swift:container:/prefix`,
//! `rest:https://host/path`): the resolver writes it into each Job (`REPOSITORY_URL`) and the
//! agent reads it back, through this one type (`Display` and `FromStr`, a round trip tested).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A repository's location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// `local:/path` or `/path`.
    Local(PathBuf),
    /// `s3:https://host:port/bucket/prefix` (`s3:host/bucket` means https).
    S3 {
        endpoint: String,
        bucket: String,
        prefix: String,
    },
    /// `gs:bucket:/prefix`.
    Gcs { bucket: String, prefix: String },
    /// `azure:container:/prefix`.
    Azure { container: String, prefix: String },
    /// `b2:bucket:prefix`.
    B2 { bucket: String, prefix: String },
    /// `swift:container:/prefix`.
    Swift { container: String, prefix: String },
    /// `rest:http://host:8000/path`.
    Rest { url: String },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `<scheme>:<bucket>:` then `/<prefix>` (`<prefix>` for B2) when there is one.
        let with_prefix =
            |f: &mut fmt::Formatter<'_>, scheme: &str, bucket: &str, prefix: &str, sep: &str| {
                write!(f, "{scheme}:{bucket}:")?;
                if prefix.is_empty() {
                    Ok(())
                } else {
                    write!(f, "{sep}{prefix}")
                }
            };
        match self {
            Self::Local(path) => write!(f, "local:{}", path.display()),
            Self::S3 {
                endpoint,
                bucket,
                prefix,
            } => {
                write!(f, "s3:{}/{bucket}", endpoint.trim_end_matches('/'))?;
                if prefix.is_empty() {
                    Ok(())
                } else {
                    write!(f, "/{prefix}")
                }
            }
            Self::Gcs { bucket, prefix } => with_prefix(f, "gs", bucket, prefix, "/"),
            Self::Azure { container, prefix } => with_prefix(f, "azure", container, prefix, "/"),
            Self::B2 { bucket, prefix } => with_prefix(f, "b2", bucket, prefix, ""),
            Self::Swift { container, prefix } => with_prefix(f, "swift", container, prefix, "/"),
            Self::Rest { url } => write!(f, "rest:{url}"),
        }
    }
}

fn bucket_and_prefix(rest: &str, what: &str) -> Result<(String, String), String> {
    let (bucket, prefix) = rest.split_once(':').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!("{what}: no bucket or container"));
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

impl FromStr for Location {
    type Err = String;

    /// Reads restic's notation; the error says what was expected (a URL's credentials are
    /// never quoted).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("the repository is empty".into());
        }
        if s.starts_with('/') {
            return Ok(Self::Local(PathBuf::from(s)));
        }
        let Some((scheme, rest)) = s.split_once(':') else {
            return Err(format!(
                "{:?}: expected local:, s3:, gs:, azure:, b2:, swift: or rest:",
                crate::appbinding::without_userinfo(s)
            ));
        };
        match scheme {
            "local" if rest.is_empty() => Err("local: has no path".into()),
            "local" => Ok(Self::Local(PathBuf::from(rest))),
            "s3" => parse_s3(rest, s),
            "gs" => bucket_and_prefix(rest, s).map(|(bucket, prefix)| Self::Gcs { bucket, prefix }),
            "azure" => bucket_and_prefix(rest, s)
                .map(|(container, prefix)| Self::Azure { container, prefix }),
            "b2" => bucket_and_prefix(rest, s).map(|(bucket, prefix)| Self::B2 { bucket, prefix }),
            "swift" => bucket_and_prefix(rest, s)
                .map(|(container, prefix)| Self::Swift { container, prefix }),
            "rest" if rest.starts_with("http://") || rest.starts_with("https://") => {
                Ok(Self::Rest { url: rest.into() })
            }
            "rest" => Err(format!(
                "rest: needs an http(s) URL, got {:?}",
                crate::appbinding::without_userinfo(rest)
            )),
            other => Err(format!(
                "unknown backend {other:?} (local, s3, gs, azure, b2, swift, rest)"
            )),
        }
    }
}

/// `s3:[http[s]://]host[:port]/bucket[/prefix]` (no scheme means https).
fn parse_s3(rest: &str, whole: &str) -> Result<Location, String> {
    let (scheme, tail) = if let Some(t) = rest.strip_prefix("https://") {
        ("https", t)
    } else if let Some(t) = rest.strip_prefix("http://") {
        ("http", t)
    } else {
        ("https", rest)
    };
    let mut parts = tail.splitn(3, '/');
    let host = parts.next().unwrap_or_default();
    let bucket = parts.next().unwrap_or_default();
    let prefix = parts.next().unwrap_or_default().trim_matches('/');
    if host.is_empty() || bucket.is_empty() {
        return Err(format!(
            "{whole:?}: expected s3:https://host/bucket[/prefix]"
        ));
    }
    Ok(Location::S3 {
        endpoint: format!("{scheme}://{host}"),
        bucket: bucket.into(),
        prefix: prefix.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn restic_notation() {
        let cases = [
            ("local:/repo/x", Location::Local("/repo/x".into())),
            ("/data", Location::Local("/data".into())),
            (
                "s3:http://127.0.0.1:9000/bucket/some/prefix/",
                Location::S3 {
                    endpoint: "http://127.0.0.1:9000".into(),
                    bucket: "bucket".into(),
                    prefix: "some/prefix".into(),
                },
            ),
            (
                "s3:s3.amazonaws.com/b",
                Location::S3 {
                    endpoint: "https://s3.amazonaws.com".into(),
                    bucket: "b".into(),
                    prefix: String::new(),
                },
            ),
            (
                "gs:bkt:/p/q",
                Location::Gcs {
                    bucket: "bkt".into(),
                    prefix: "p/q".into(),
                },
            ),
            (
                "b2:bkt:pre",
                Location::B2 {
                    bucket: "bkt".into(),
                    prefix: "pre".into(),
                },
            ),
            (
                "swift:c:/",
                Location::Swift {
                    container: "c".into(),
                    prefix: String::new(),
                },
            ),
            (
                "rest:http://h:8000/r",
                Location::Rest {
                    url: "http://h:8000/r".into(),
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<Location>(), Ok(want), "{text}");
        }
        for bad in [
            "",
            "s3:",
            "s3:host",
            "gs:",
            "rest:ftp://x",
            "nope:x",
            "local:",
        ] {
            assert!(bad.parse::<Location>().is_err(), "{bad}");
        }
        let err = "rest:ftp://user:secret@x".parse::<Location>().unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9.-]{1,20}"
    }

    fn prefix() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[a-z0-9_-]{1,8}(/[a-z0-9_-]{1,8}){0,3}"
        ]
    }

    fn location() -> impl Strategy<Value = Location> {
        prop_oneof![
            "(/[a-z0-9_.-]{1,10}){1,4}".prop_map(|p| Location::Local(p.into())),
            (
                prop_oneof![Just("http"), Just("https")],
                name(),
                prop::option::of(1u16..),
                name(),
                prefix()
            )
                .prop_map(|(scheme, host, port, bucket, prefix)| Location::S3 {
                    endpoint: match port {
                        Some(p) => format!("{scheme}://{host}:{p}"),
                        None => format!("{scheme}://{host}"),
                    },
                    bucket,
                    prefix,
                }),
            (name(), prefix()).prop_map(|(bucket, prefix)| Location::Gcs { bucket, prefix }),
            (name(), prefix())
                .prop_map(|(container, prefix)| Location::Azure { container, prefix }),
            (name(), prefix()).prop_map(|(bucket, prefix)| Location::B2 { bucket, prefix }),
            (name(), prefix())
                .prop_map(|(container, prefix)| Location::Swift { container, prefix }),
            (prop_oneof![Just("http"), Just("https")], name(), prefix()).prop_map(|(s, h, p)| {
                Location::Rest {
                    url: format!("{s}://{h}/{p}"),
                }
            }),
        ]
    }

    proptest! {
        /// What the resolver writes, the agent reads back as the same location.
        #[test]
        fn display_and_parse_round_trip(loc in location()) {
            prop_assert_eq!(loc.to_string().parse::<Location>(), Ok(loc));
        }
    }
}
