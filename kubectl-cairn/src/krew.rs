//! The krew manifest template (`krew/cairn.yaml`): checked here so that the plugin index
//! would take it — its name, short description, and a platform per target, each installing
//! the `kubectl-cairn` binary — and that its version placeholder follows the crate's.

#[cfg(test)]
mod tests {
    const MANIFEST: &str = include_str!("../krew/cairn.yaml");

    #[test]
    fn the_krew_manifest_is_a_valid_plugin_of_this_version() {
        let m: serde_yaml::Value = serde_yaml::from_str(MANIFEST).expect("YAML");
        assert_eq!(
            m["apiVersion"].as_str(),
            Some("krew.googlecontainertools.github.com/v1alpha2")
        );
        assert_eq!(m["kind"].as_str(), Some("Plugin"));
        assert_eq!(m["metadata"]["name"].as_str(), Some("cairn"));
        let spec = &m["spec"];
        let short = spec["shortDescription"].as_str().expect("shortDescription");
        assert!(
            !short.is_empty() && short.len() <= 50,
            "krew wants a short one: {short}"
        );
        assert_eq!(
            spec["version"].as_str(),
            Some(format!("v{}", env!("CARGO_PKG_VERSION")).as_str()),
            "the manifest's version is the crate's"
        );
        let platforms = spec["platforms"].as_sequence().expect("platforms");
        assert!(!platforms.is_empty());
        for p in platforms {
            assert_eq!(p["bin"].as_str(), Some("kubectl-cairn"), "{p:?}");
            let uri = p["uri"].as_str().expect("uri");
            assert!(
                uri.starts_with("https://") && uri.contains(env!("CARGO_PKG_VERSION")),
                "{uri}"
            );
            let sha = p["sha256"].as_str().expect("sha256");
            assert!(
                sha.len() == 64 || sha.starts_with("${"),
                "a digest or its placeholder: {sha}"
            );
            let labels = &p["selector"]["matchLabels"];
            assert!(
                labels["os"].as_str().is_some() && labels["arch"].as_str().is_some(),
                "{p:?}"
            );
            let files = p["files"].as_sequence().expect("files");
            assert!(files.iter().any(|f| f["to"].as_str() == Some(".")), "{p:?}");
        }
    }
}
