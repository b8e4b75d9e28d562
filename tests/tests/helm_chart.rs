//! The Helm chart (`deploy/helm/tessera`), rendered with Helm's own engine (helm-python-sdk:
//! Helm v4's Go SDK) for the default values, a GPU + KEDA + SASL values file and an Intel NPU
//! one, linted
//! strictly, validated against Kubernetes' schemas (kubernetes-validate), and its objects
//! checked here: kinds, probes, ports, env, volumes, security context, GPU limits, the
//! rendered tessera.toml read by tessera's own configuration loader, and the alert rules taken
//! from deploy/observability/ (one source). A values file the schema rejects fails with Helm's
//! message. The Python tools come from `make pytools` (`deploy/helm/tests/chart_tool.py`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use tessera_models::{ExecutionProviderConfig, PluginDevice};
use tessera_tests::{pytools, workspace_root};

fn chart() -> PathBuf {
    workspace_root().join("deploy/helm/tessera")
}

fn chart_tool(site: &Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(Command::new("python3")
        .arg(workspace_root().join("deploy/helm/tests/chart_tool.py"))
        .args(args)
        .env("PYTHONPATH", site)
        .output()?)
}

/// The render report of the chart with `values` (a file), which must be accepted.
fn render(site: &Path, values: Option<&Path>) -> anyhow::Result<Report> {
    let chart = chart();
    let mut args = vec!["render".to_owned(), chart.display().to_string()];
    args.extend(values.map(|v| v.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = chart_tool(site, &args)?;
    anyhow::ensure!(
        output.status.success(),
        "render failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout)?;
    Ok(Report(report))
}

struct Report(Value);

impl Report {
    fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self
            .objects()
            .map(|o| o["kind"].as_str().unwrap_or_default().to_owned())
            .collect();
        kinds.sort();
        kinds
    }

    fn objects(&self) -> impl Iterator<Item = &Value> {
        self.0["objects"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| &o["object"])
    }

    fn one(&self, kind: &str) -> &Value {
        let mut found = self.objects().filter(|o| o["kind"] == kind);
        let object = found.next().unwrap_or_else(|| panic!("no {kind} rendered"));
        assert!(found.next().is_none(), "more than one {kind}");
        object
    }

    /// Lint clean (strict: warnings count), and every object with a schema valid.
    fn assert_clean(&self) {
        let lint = &self.0["lint"];
        assert_eq!(lint["errors"], serde_json::json!([]), "{lint}");
        let findings: Vec<&Value> = lint["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["severity"].as_i64().unwrap_or(3) >= 2)
            .collect();
        assert!(findings.is_empty(), "lint: {findings:?}");
        assert_eq!(
            self.0["invalid"],
            serde_json::json!([]),
            "Kubernetes rejects objects"
        );
    }

    fn container(&self) -> &Value {
        &self.one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    }

    /// The rendered tessera.toml, as tessera loads it.
    fn config(&self) -> anyhow::Result<tessera_actors::PipelineConfig> {
        let text = self.one("ConfigMap")["data"]["tessera.toml"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no tessera.toml in the ConfigMap"))?;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("tessera.toml");
        std::fs::write(&file, text)?;
        tessera::config::load(Some(&file), &[])
    }
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect()
}

#[test]
fn the_default_values_render_a_restrictive_cpu_deployment() -> anyhow::Result<()> {
    let Some(site) = pytools("helm_python") else {
        return Ok(());
    };
    let report = render(&site, None)?;
    report.assert_clean();
    assert_eq!(
        report.kinds(),
        [
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount"
        ]
    );
    let deployment = report.one("Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    let container = report.container();
    assert_eq!(container["image"], "ghcr.io/tessera-project/tessera:0.1.0");
    assert_eq!(container["ports"][0]["containerPort"], 9464);
    assert_eq!(container["ports"][0]["name"], "http");
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "http", "{probe}");
    }
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(
        container["resources"]["limits"]
            .get("nvidia.com/gpu")
            .is_none()
    );
    // A read-only root: /tmp is the one writable place; the config is mounted read-only.
    assert_eq!(names(&container["volumeMounts"]), ["config", "tmp"]);
    assert_eq!(names(&pod["volumes"]), ["config", "tmp"]);
    assert!(env(container, "TESSERA_KAFKA_SASL_PASSWORD").is_none());
    let config = report.config()?;
    assert_eq!(config.kafka.brokers, "kafka:9092");
    assert_eq!(config.http.address, "0.0.0.0:9464");
    assert_eq!(
        report.one("Service")["spec"]["ports"][0]["targetPort"],
        "http"
    );
    Ok(())
}

#[test]
fn gpu_keda_and_sasl_values_render_what_they_promise() -> anyhow::Result<()> {
    let Some(site) = pytools("helm_python") else {
        return Ok(());
    };
    let values = chart().join("ci/gpu-keda-sasl-values.yaml");
    let report = render(&site, Some(&values))?;
    report.assert_clean();
    assert_eq!(
        report.kinds(),
        [
            "ConfigMap",
            "Deployment",
            "PersistentVolumeClaim",
            "PodDisruptionBudget",
            "PrometheusRule",
            "ScaledObject",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
            "TriggerAuthentication"
        ]
    );
    // KEDA owns the replica count, capped at the input topic's 6 partitions (12 asked).
    let deployment = report.one("Deployment");
    assert!(deployment["spec"].get("replicas").is_none());
    let scaled = report.one("ScaledObject");
    assert_eq!(scaled["spec"]["maxReplicaCount"], 6);
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "kafka");
    assert_eq!(trigger["metadata"]["lagThreshold"], "100");
    assert_eq!(trigger["metadata"]["consumerGroup"], "tessera-gpu");
    assert_eq!(trigger["metadata"]["topic"], "cameras.frames");
    assert_eq!(trigger["metadata"]["sasl"], "scram_sha512");

    // The GPU: image, limit, node selector, toleration.
    let pod = &deployment["spec"]["template"]["spec"];
    let container = report.container();
    assert_eq!(
        container["image"],
        "ghcr.io/tessera-project/tessera:0.1.0-gpu"
    );
    assert_eq!(container["resources"]["limits"]["nvidia.com/gpu"], 1);
    assert_eq!(pod["nodeSelector"]["nvidia.com/gpu.present"], "true");
    assert_eq!(pod["tolerations"][0]["key"], "nvidia.com/gpu");

    // Secrets by reference only.
    for (name, secret) in [
        ("TESSERA_KAFKA_SASL_USERNAME", "tessera-kafka-user"),
        ("TESSERA_KAFKA_SASL_PASSWORD", "tessera-kafka-user"),
        ("TESSERA_ADMIN_TOKEN", "tessera-admin"),
    ] {
        let variable = env(container, name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(
            variable["valueFrom"]["secretKeyRef"]["name"], secret,
            "{name}"
        );
        assert!(variable.get("value").is_none(), "{name} holds a value");
    }
    assert_eq!(
        names(&container["volumeMounts"]),
        ["config", "tmp", "heads", "kafka-tls"]
    );

    // What tessera reads: CUDA then CPU, the heads folder on the volume, the CA.
    let config = report.config()?;
    let providers: Vec<&str> = config
        .model
        .session
        .execution_providers
        .iter()
        .map(|p| p.name())
        .collect();
    assert_eq!(providers, ["cuda", "cpu"]);
    assert_eq!(
        config.heads.dir.as_deref(),
        Some(Path::new("/var/lib/tessera/heads"))
    );
    for (property, file) in [
        ("ssl.ca.location", "ca.crt"),
        ("ssl.certificate.location", "tls.crt"),
        ("ssl.key.location", "tls.key"),
    ] {
        assert_eq!(
            config.kafka.properties.get(property).map(String::as_str),
            Some(format!("/etc/tessera/kafka-tls/{file}").as_str()),
            "{property}"
        );
    }
    assert_eq!(
        pod["volumes"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["name"] == "kafka-tls"))
            .map(|v| &v["secret"]["secretName"]),
        Some(&Value::from("tessera-kafka-tls"))
    );
    assert_eq!(config.kafka.input_topics, ["cameras.frames"]);

    // The alert rules are deploy/observability's, not a copy.
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(
        workspace_root().join("deploy/observability/alert-rules.yaml"),
    )?)?;
    let rules: Value = serde_json::to_value(rules)?;
    assert_eq!(report.one("PrometheusRule")["spec"], rules);
    assert_eq!(
        report.one("ServiceMonitor")["spec"]["endpoints"][0]["port"],
        "http"
    );
    Ok(())
}

#[test]
fn an_intel_npu_renders_the_openvino_plugin_first() -> anyhow::Result<()> {
    let Some(site) = pytools("helm_python") else {
        return Ok(());
    };
    let report = render(&site, Some(&chart().join("ci/intel-npu-values.yaml")))?;
    report.assert_clean();
    let container = report.container();
    assert_eq!(
        container["image"],
        "ghcr.io/tessera-project/tessera:0.1.0-openvino"
    );
    let limits = &container["resources"]["limits"];
    assert_eq!(limits["npu.intel.com/accel"], 1);
    assert!(limits.get("nvidia.com/gpu").is_none(), "{limits}");
    // None of the chart's NVIDIA placement.
    let pod = &report.one("Deployment")["spec"]["template"]["spec"];
    assert!(pod.get("nodeSelector").is_none(), "{}", pod["nodeSelector"]);
    assert!(pod.get("tolerations").is_none(), "{}", pod["tolerations"]);
    // What tessera reads: the plugin's NPU with its options, then the CPU.
    let config = report.config()?;
    assert_eq!(
        config.model.session.execution_providers,
        [
            ExecutionProviderConfig::Plugin {
                library: "/opt/ep/openvino/libonnxruntime_providers_openvino_plugin.so".into(),
                device: Some(PluginDevice::Npu),
                options: [("precision".to_owned(), "FP16".to_owned())].into(),
            },
            ExecutionProviderConfig::Cpu,
        ]
    );
    Ok(())
}

#[test]
fn values_that_break_the_schema_are_refused_with_a_readable_message() -> anyhow::Result<()> {
    let Some(site) = pytools("helm_python") else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    for (values, expected) in [
        (
            "replicaCount: 0\n",
            "at '/replicaCount': minimum: got 0, want 1",
        ),
        (
            "gpu:\n  enabled: \"yes\"\n",
            "at '/gpu/enabled': got string, want boolean",
        ),
        (
            "replicas: 3\n",
            "additional properties 'replicas' not allowed",
        ),
        (
            "config:\n  kafka:\n    brokers: \"\"\n    group_id: g\n    input_topics: [f]\n",
            "at '/config/kafka/brokers'",
        ),
        (
            "autoscaling:\n  enabled: true\nkeda:\n  enabled: true\n",
            "choose one",
        ),
        (
            "kafka:\n  tls:\n    existingSecret: t\n    certKey: tls.crt\n",
            "set both certKey and keyKey",
        ),
        (
            "gpu:\n  enabled: true\n  executionProviders:\n    - kind: plugin\n      device: npu\n",
            "at '/gpu/executionProviders/0': missing property 'library'",
        ),
    ] {
        let file = dir.path().join("values.yaml");
        std::fs::write(&file, values)?;
        let output = chart_tool(
            &site,
            &[
                "render",
                &chart().display().to_string(),
                &file.display().to_string(),
            ],
        )?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{values}: {stderr}");
        assert!(stderr.contains(expected), "{values}: {stderr}");
    }
    Ok(())
}

#[test]
fn the_kubernetes_validator_rejects_a_broken_object() -> anyhow::Result<()> {
    let Some(site) = pytools("helm_python") else {
        return Ok(());
    };
    let broken = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"replicas": "two", "selector": {}, "template": {}}
    });
    let mut child = Command::new("python3")
        .arg(workspace_root().join("deploy/helm/tests/chart_tool.py"))
        .arg("validate")
        .env("PYTHONPATH", &site)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    if let Some(stdin) = child.stdin.as_mut() {
        std::io::Write::write_all(stdin, broken.to_string().as_bytes())?;
    }
    let output = child.wait_with_output()?;
    let verdict: Value = serde_json::from_slice(&output.stdout)?;
    let error = verdict["error"].as_str().unwrap_or_default();
    assert!(error.contains("replicas"), "{verdict}");
    Ok(())
}
