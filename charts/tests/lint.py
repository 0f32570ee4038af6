"""Lints the Helm chart with Helm's own linter (through the helm-sdkpy bindings, no helm binary):
templates must render and parse as YAML, for the default values and for each variant below. Variants
the chart must refuse are checked for their exact message (in lint mode Helm logs `fail` and
`required` instead of stopping, so each lint runs in a child process whose log is read).

Usage: python lint.py CHART_DIR
"""

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from helm_sdkpy import Configuration
from helm_sdkpy.chart import Lint

SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}

# name -> (values merged over values.yaml, None when it must pass, else the message it must give)
VARIANTS = {
    "defaults": ({}, None),
    "single replica without leader election": ({"replicaCount": 1, "leaderElection": {"enabled": False}}, None),
    "existing service account, no metrics service": (
        {"serviceAccount": {"create": False, "name": "ops"}, "metrics": {"service": {"enabled": False}}},
        None,
    ),
    "ServiceMonitor, PrometheusRule, scheduling and pull secrets": (
        {
            "metrics": {
                "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                "prometheusRule": {
                    "enabled": True,
                    "maxBackupAgeSeconds": 7200,
                    "drillFailureAlert": True,
                    "labels": {"release": "prom"},
                },
            },
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "ops", "operator": "Exists"}],
            "imagePullSecrets": [{"name": "regcred"}],
            "podAnnotations": {"a": "b"},
            "image": {"tag": "0.1.0-rc1"},
        },
        None,
    ),
    "two replicas without leader election": (
        {"leaderElection": {"enabled": False}},
        "replicaCount > 1 needs leaderElection.enabled: two replicas would reconcile the same objects",
    ),
    "no service account name": (
        {"serviceAccount": {"create": False}},
        "serviceAccount.name is required when serviceAccount.create is false",
    ),
}


def merge(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = v
    return base


async def lint(path):
    with Configuration(namespace="mysql-backup-operator") as config:
        return await Lint(config).run(str(path))


def lint_one(chart):
    """Child process: lint one chart, print the result as JSON on stdout."""
    print(json.dumps(asyncio.run(lint(chart))))


def main(chart):
    chart = Path(chart)
    failed = False
    for name, (values, refusal) in VARIANTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / chart.name
            shutil.copytree(chart, copy)
            merged = merge(yaml.safe_load((chart / "values.yaml").read_text()), values)
            (copy / "values.yaml").write_text(yaml.safe_dump(merged))
            child = subprocess.run(
                [sys.executable, __file__, "--one", str(copy)], capture_output=True, text=True, check=False
            )
        if child.returncode != 0:
            print(f"FAILED  {name}: the linter crashed\n{child.stderr}")
            failed = True
            continue
        result = json.loads(child.stdout)
        problems = [m for m in result.get("Messages") or [] if m.get("Severity", 0) >= 2]
        where = ", ".join(f"{SEVERITY.get(m['Severity'])} in {m['Path']}" for m in problems)
        if refusal is None and not problems and "message=" not in child.stderr:
            print(f"ok      {name}")
        elif refusal is not None and f'message="{refusal}"' in child.stderr:
            print(f"ok      {name}: refused with \"{refusal}\"")
        else:
            failed = True
            print(f"FAILED  {name}: {where or 'no lint error'}; expected {refusal or 'a clean lint'}")
            print(child.stderr)
            print(json.dumps(result, indent=2))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    if sys.argv[1] == "--one":
        lint_one(sys.argv[2])
    else:
        main(sys.argv[1])
