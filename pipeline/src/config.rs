//! Layered configuration: built-in defaults, then the TOML file, then `TESSERA__SECTION__KEY`
//! environment variables, then `--set section.key=value` flags.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use tessera_actors::PipelineConfig;

/// Loads the configuration from its layers and validates it.
pub fn load(file: Option<&Path>, overrides: &[String]) -> anyhow::Result<PipelineConfig> {
    let mut figment = Figment::from(Serialized::defaults(PipelineConfig::default()));
    if let Some(file) = file {
        if !file.is_file() {
            anyhow::bail!("configuration file {} not found", file.display());
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    figment = figment.merge(Env::prefixed("TESSERA__").split("__"));
    for item in overrides {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--set expects section.key=value, got {item:?}"))?;
        figment = figment.merge(Serialized::default(key.trim(), parse_value(value.trim())));
    }
    let config: PipelineConfig = figment
        .extract()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    config.validate()?;
    Ok(config)
}

/// Parses a flag value as TOML (numbers, booleans, arrays), else takes it as a string.
fn parse_value(raw: &str) -> figment::value::Value {
    let wrapped = format!("v = {raw}");
    toml::from_str::<toml::Table>(&wrapped)
        .ok()
        .and_then(|table| table.get("v").cloned())
        .and_then(|v| figment::value::Value::serialize(v).ok())
        .unwrap_or_else(|| figment::value::Value::from(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("tessera.toml");
        std::fs::write(
            &file,
            "[kafka]\nbrokers = \"file:9092\"\ngroup_id = \"from-file\"\n[recognize]\nworkers = 3\n",
        )?;
        let config = load(
            Some(&file),
            &[
                "kafka.group_id=from-flag".into(),
                "flow.max_in_flight_frames=7".into(),
            ],
        )?;
        assert_eq!(config.kafka.brokers, "file:9092");
        assert_eq!(config.kafka.group_id, "from-flag");
        assert_eq!(config.recognize.workers, 3);
        assert_eq!(config.flow.max_in_flight_frames, 7);
        Ok(())
    }

    #[test]
    fn unknown_keys_are_rejected() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("tessera.toml");
        std::fs::write(&file, "[kafka]\nbrokerz = \"typo:9092\"\n")?;
        let error = load(Some(&file), &[]).err().map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("brokerz")));
        Ok(())
    }

    #[test]
    fn execution_providers_by_name_at_the_model_level() -> anyhow::Result<()> {
        use tessera_models::ExecutionProviderConfig as Provider;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("tessera.toml");
        std::fs::write(
            &file,
            "[model]\nexecution_providers = [\"tensorrt\", \"cuda\", \"openvino\", \"cpu\"]\n",
        )?;
        let config = load(Some(&file), &[])?;
        let kinds: Vec<&str> = config
            .model
            .session
            .execution_providers
            .iter()
            .map(Provider::name)
            .collect();
        assert_eq!(kinds, ["tensorrt", "cuda", "openvino", "cpu"]);
        // A flag works the same way, with options where a table is given.
        let config = load(
            None,
            &[r#"model.execution_providers=[{ kind = "cuda", device_id = 1 }, "cpu"]"#.into()],
        )?;
        assert_eq!(
            config.model.session.execution_providers,
            [Provider::Cuda { device_id: 1 }, Provider::Cpu]
        );
        // Two different lists: which one was meant is unclear.
        let error = load(
            Some(&file),
            &[r#"model.session.execution_providers=["cuda"]"#.into()],
        )
        .err()
        .map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(|e| e.contains("are both set")),
            "{error:?}"
        );
        Ok(())
    }

    #[test]
    fn every_setting_is_in_the_readme_reference() -> anyhow::Result<()> {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))?;
        let defaults = toml::Table::try_from(PipelineConfig::default())?;
        // Nested tables (model.session, label_requests.uncertain.limit) are documented key by
        // key; an empty one (a map such as kafka.properties) by its own key.
        fn keys(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
            for (key, value) in table {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match value.as_table() {
                    Some(inner) if !inner.is_empty() => keys(&path, inner, out),
                    _ if prefix.is_empty() => {}
                    _ => out.push(path),
                }
            }
        }
        let mut paths = Vec::new();
        keys("", &defaults, &mut paths);
        let missing: Vec<String> = paths
            .into_iter()
            .filter(|path| !readme.contains(&format!("`{path}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "README configuration reference lacks {missing:?}"
        );
        Ok(())
    }

    #[test]
    fn invalid_values_are_rejected_by_validate() {
        let error = load(None, &["flow.max_in_flight_frames=0".into()]).err();
        assert!(error.is_some_and(|e| e.to_string().contains("max_in_flight_frames")));
    }
}
