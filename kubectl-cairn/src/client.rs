//! The Kubernetes client of the user's own kubeconfig (`--kubeconfig`, `--context`), and the
//! namespace commands work in (`-n`, else the context's).

use anyhow::{Context as _, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::cli::Global;

/// A client with the user's rights, and the namespace to work in.
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
}

impl Cluster {
    /// Connects as kubectl would: `--kubeconfig`, else `$KUBECONFIG` or `~/.kube/config`, else
    /// the pod's service account.
    pub async fn connect(global: &Global) -> Result<Self> {
        // Two rustls providers may be compiled in (workspace builds unify features): pick one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let options = KubeConfigOptions {
            context: global.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match &global.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .with_context(|| format!("--kubeconfig {}", path.display()))?;
                Config::from_custom_kubeconfig(kubeconfig, &options).await?
            }
            None => match Config::from_kubeconfig(&options).await {
                Ok(config) => config,
                Err(e) if global.context.is_some() => return Err(e).context("--context"),
                Err(e) => Config::incluster()
                    .map_err(|_| e)
                    .context("no kubeconfig (set --kubeconfig or $KUBECONFIG)")?,
            },
        };
        let namespace = global
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        Ok(Self {
            client: Client::try_from(config)?,
            namespace,
        })
    }

    /// The namespaced API of `K` in the working namespace.
    pub fn api<K>(&self) -> kube::Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        kube::Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// `K` named `name` in the working namespace, or an error saying it is not there.
    pub async fn get<K>(&self, name: &str) -> Result<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        self.api::<K>().get_opt(name).await?.with_context(|| {
            format!(
                "{} {name:?} not found in namespace {}",
                K::kind(&K::DynamicType::default()),
                self.namespace
            )
        })
    }
}
