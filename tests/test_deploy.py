"""deploy/ and pipelines/ validated offline: the Kubernetes manifests against the Kubernetes schemas
(kubernetes-validate), their probes, resources and security context; the Helm chart's values are the
hub's env vars and every value a template reads exists (``helm lint``/``helm template`` too where a
helm binary is installed: no package registry here ships one); the release pipelines test, build
the multi-arch image, push it, deploy and run ``edgehub check``."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgehub.settings import ENV_ALIASES, describe_settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
CHART = ROOT / "deploy" / "helm" / "edgehub"
PIPELINES = ROOT / "pipelines"
ALIASES = {alias for names in ENV_ALIASES.values() for alias in names}
VARIABLES = {name for name, _, _ in describe_settings()} | ALIASES


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(path: Path) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in documents(path)}


def test_kubernetes_manifests_validate_against_the_kubernetes_schemas() -> None:
    tool = Path(sys.executable).with_name("kubernetes-validate")
    files = sorted(str(path) for path in K8S.glob("*.yaml"))

    result = subprocess.run([str(tool), "--strict", "--quiet", *files], capture_output=True, text=True,
                            timeout=120, check=False)

    assert result.returncode == 0, result.stdout + result.stderr


def test_statefulset_keeps_the_store_on_a_claim_and_probes_the_metrics_port() -> None:
    kinds = by_kind(K8S / "edgehub.yaml")
    statefulset = kinds["StatefulSet"]["spec"]
    pod = statefulset["template"]["spec"]
    [container] = pod["containers"]
    env = {entry["name"]: entry.get("value") for entry in container["env"]}
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}

    assert statefulset["replicas"] == 1
    assert statefulset["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert {"name": "data", "mountPath": env["StorageFolder"]} in container["volumeMounts"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}
    assert ports["metrics"] == int(env["Metrics__Listener__Port"])
    assert ports["https"] == int(env["httpSettings__port"])
    assert set(env) <= VARIABLES
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"requests", "limits"} <= set(container["resources"])


def test_service_exposes_the_four_ports() -> None:
    service = by_kind(K8S / "edgehub.yaml")["Service"]["spec"]

    assert sorted(port["port"] for port in service["ports"]) == [443, 5671, 8883, 9600]


def test_chart_values_are_the_hubs_environment_variables() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())

    assert chart["apiVersion"] == "v2"
    assert set(values["env"]) <= VARIABLES
    assert re.fullmatch(r"\d+\.\d+\.\d+", values["image"]["tag"])  # a full version, never latest


def _lookup(values: dict[str, Any], path: str) -> bool:
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_every_value_a_chart_template_reads_is_in_values_yaml() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    read = {match for path in (CHART / "templates").iterdir()
            for match in re.findall(r"\.Values\.([A-Za-z0-9_.]+)", path.read_text())}

    assert read
    assert sorted(path for path in read if not _lookup(values, path)) == []


@pytest.mark.skipif(shutil.which("helm") is None, reason="no helm binary: PyPI, Debian and npm ship none")
def test_helm_lint_and_template_render_valid_kubernetes_objects(tmp_path: Path) -> None:
    subprocess.run(["helm", "lint", str(CHART)], check=True, timeout=120)
    rendered = subprocess.run(["helm", "template", "edgehub", str(CHART)], check=True, capture_output=True,
                              text=True, timeout=120).stdout
    (tmp_path / "rendered.yaml").write_text(rendered)
    tool = Path(sys.executable).with_name("kubernetes-validate")
    subprocess.run([str(tool), "--strict", "--quiet", str(tmp_path / "rendered.yaml")], check=True,
                   timeout=120)


def steps(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) + str(step.get("uses", "")) + str(step.get("with", ""))
                     for step in job.get("steps", []))


def test_github_release_pipeline_tests_builds_multi_arch_pushes_and_deploys_with_a_check() -> None:
    release = yaml.safe_load((PIPELINES / "github-actions" / "edgehub-release.yml").read_text())
    deploy = yaml.safe_load((PIPELINES / "github-actions" / "edgehub-deploy.yml").read_text())
    jobs = release["jobs"]

    assert "make test" in steps(jobs["test"])
    image = steps(jobs["image"])
    assert "docker/setup-buildx-action" in image
    assert "linux/amd64,linux/arm64,linux/arm/v7" in image
    assert "'push': True" in image
    assert jobs["staging"]["uses"].endswith("edgehub-deploy.yml")
    assert "staging" in jobs["production"]["needs"]
    deployed = steps(deploy["jobs"]["deploy"])
    assert "az iot edge set-modules" in deployed
    assert "helm upgrade --install" in deployed
    assert deployed.count("edgehub check") == 2
    assert "--expect-config-version" in deployed


def test_azure_pipeline_has_the_same_stages_and_its_template_runs_the_check() -> None:
    pipeline = yaml.safe_load((PIPELINES / "azure-pipelines" / "azure-pipelines.yml").read_text())
    template = (PIPELINES / "azure-pipelines" / "templates" / "deploy-and-check.yml").read_text()

    assert [stage["stage"] for stage in pipeline["stages"]] == ["test", "image", "staging", "production"]
    assert "make test" in yaml.safe_dump(pipeline)
    assert "--platform linux/amd64,linux/arm64,linux/arm/v7" in yaml.safe_dump(pipeline, width=1000)
    assert "az iot edge set-modules" in template
    assert "edgehub check" in template
    yaml.safe_load(template)


def test_the_pipelines_deploy_the_drop_in_manifest_that_check_config_accepts() -> None:
    manifest = ROOT / "configs" / "deployment-manifest.json"
    result = subprocess.run([sys.executable, "-m", "edgehub", "check-config", "--config", str(manifest)],
                            capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 0, result.stderr
    release = (PIPELINES / "github-actions" / "edgehub-release.yml").read_text()
    assert "configs/deployment-manifest.json" in release
