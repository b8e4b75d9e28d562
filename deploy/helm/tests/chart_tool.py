"""Renders, lints and validates the Helm chart with Helm's own engine (helm-python-sdk, Helm v4's
Go SDK: no helm binary) and Kubernetes' schemas (kubernetes-validate), for
tests/tests/helm_chart.rs, which checks the objects.

  render CHART [VALUES_FILE]   prints one JSON document:
      {"lint": {...strict lint report...},
       "objects": [{"template": path, "object": {...}}, ...],
       "invalid": [{"kind", "name", "error"}],      objects Kubernetes' schemas reject
       "unvalidated": [kind, ...]}                  custom resources without a schema here
  validate                     reads one object as JSON on stdin, prints {"error": ...|null}

A values file the chart's values.schema.json (or a template's `fail`) rejects exits 2 with
Helm's message on stderr.
"""

import json
import sys

import helm_python as helm
import kubernetes_validate
import yaml

KUBERNETES = "1.30.0"


def check(obj):
    """Kubernetes' verdict on one object: None when valid; "no schema" for unknown kinds."""
    try:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)
        return None
    except kubernetes_validate.SchemaNotFoundError:
        return "no schema"
    except kubernetes_validate.ValidationError as error:
        return f"{'/'.join(str(p) for p in error.path)}: {error.message}"


def render(chart_dir, values_file=None):
    values = {}
    if values_file:
        with open(values_file) as f:
            values = yaml.safe_load(f) or {}
    chart = helm.Chart.load(chart_dir)
    try:
        chart.validate_schema(chart.merge_values(values))
        rendered = chart.render(values, name="tessera", namespace="vision", is_install=True)
    except helm.HelmError as error:
        print(str(error), file=sys.stderr)
        sys.exit(2)
    report = {"lint": helm.lint(chart_dir, values, strict=True), "objects": [],
              "invalid": [], "unvalidated": []}
    for template, text in sorted(rendered.items()):
        if not template.endswith((".yaml", ".yml")):
            continue
        for obj in yaml.safe_load_all(text):
            if not obj:
                continue
            report["objects"].append({"template": template, "object": obj})
            verdict = check(obj)
            if verdict == "no schema":
                report["unvalidated"].append(obj["kind"])
            elif verdict:
                report["invalid"].append(
                    {"kind": obj["kind"], "name": obj["metadata"]["name"], "error": verdict})
    print(json.dumps(report))


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "render":
        render(*sys.argv[2:4])
    elif command == "validate":
        print(json.dumps({"error": check(json.load(sys.stdin))}))
    else:
        sys.exit(f"unknown command {command}")
