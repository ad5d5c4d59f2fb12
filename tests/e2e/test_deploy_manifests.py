"""The deployment files (Dockerfile, deploy/docker/Dockerfile.cuda, deploy/kubernetes/**) are what an operator
runs `plugformer serve` with. Docker and a cluster are not available to the tests, so these check them offline:
every Kubernetes manifest against the API schemas of a pinned Kubernetes version (kubernetes-validate, strict: an
unknown or misspelt field fails), and the wiring between the files (ports, probe paths, labels, the metric the
autoscaler reads, the model path, the non-root user) against what the server and its image expose,
and the kustomize overlays (cuda, cpu-autoscaling) against the base they patch."""
from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {"cpu": ROOT / "Dockerfile", "cuda": ROOT / "deploy" / "docker" / "Dockerfile.cuda"}
KUBE_DIR = ROOT / "deploy" / "kubernetes"
# The Kubernetes release whose API schemas the manifests must satisfy (kubernetes-validate ships them).
KUBERNETES_VERSION = "1.33.0"

# What the server (plugins/plugformer_serve) exposes: its liveness and readiness endpoints, its metrics path and the
# queue gauge the autoscaler scales on.
LIVENESS_PATH, READINESS_PATH, METRICS_PATH = "/health", "/ready", "/metrics"
QUEUE_METRIC = "plugformer_num_requests_waiting"
MODEL_DIR = "/models/model"


# ---------------------------------------------------------------------------------------------- Dockerfile reading
def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile: comments dropped, backslash continuations joined."""
    instructions, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        if full:
            keyword, _, args = full.partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def exec_form(args: str) -> list[str]:
    """The argv of an exec-form (JSON array) CMD/ENTRYPOINT/HEALTHCHECK CMD; a shell form is an error here."""
    assert args.startswith("["), f"expected the exec (JSON array) form, got {args!r}"
    argv = json.loads(args)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The instructions of the last build stage (from its FROM on): what the image runs."""
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert starts, "no FROM"
    return instructions[starts[-1]:]


def arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """ARG name=default pairs, so that FROM ${CUDA_BASE} and pip index URLs can be resolved."""
    defaults = {}
    for keyword, args in instructions:
        if keyword == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
    return defaults


def expand(text: str, variables: dict[str, str]) -> str:
    """Replace ${NAME} and $NAME by their ARG defaults."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), text)


class Image:
    """What a Dockerfile's final image is: base, user, ports, healthcheck, entrypoint, and its pip installs."""

    def __init__(self, path: Path):
        everything = dockerfile_instructions(path.read_text())
        variables = arg_defaults(everything)
        stage = final_stage(everything)
        self.base = expand(stage[0][1].split()[0], variables)
        self.user = [args for keyword, args in stage if keyword == "USER"][-1]
        self.exposed = [int(p.split("/")[0]) for keyword, args in stage if keyword == "EXPOSE" for p in args.split()]
        self.volumes = [v for keyword, args in stage if keyword == "VOLUME" for v in exec_form(args)]
        healthchecks = [args for keyword, args in stage if keyword == "HEALTHCHECK"]
        assert len(healthchecks) == 1, f"{path.name}: expected one HEALTHCHECK"
        self.healthcheck = exec_form(healthchecks[0].split(" CMD ", 1)[1].strip())
        self.entrypoint = exec_form([args for keyword, args in stage if keyword == "ENTRYPOINT"][-1])
        self.cmd = exec_form([args for keyword, args in stage if keyword == "CMD"][-1])
        self.runs = [expand(args, variables) for keyword, args in stage if keyword == "RUN"]
        # the instruction order matters: USER must come before the process starts, torch before .[serve]
        self.order = [keyword for keyword, _ in stage]

    def pip_installs(self) -> list[list[str]]:
        """The argument lists of every `pip install` in the RUN lines, in order."""
        installs = []
        for run in self.runs:
            for command in run.split("&&"):
                words = shlex.split(command)
                if words[:2] == ["pip", "install"]:
                    installs.append(words[2:])
        return installs

    def overrides(self) -> dict[str, str]:
        """The key=value settings the container starts `plugformer serve` with (it rejects a repeated key)."""
        argv = self.entrypoint + self.cmd
        assert argv[:2] == ["plugformer", "serve"], f"the image runs {argv}, not plugformer serve"
        return settings(argv[2:])


def settings(args: list[str]) -> dict[str, str]:
    """``{key: value}`` of plugformer serve's key=value arguments; a repeated key fails as it does there."""
    pairs = [arg.split("=", 1) for arg in args]
    assert all(len(pair) == 2 for pair in pairs), f"not key=value: {args}"
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), f"a repeated key, which plugformer serve rejects: {keys}"
    return dict(pairs)


@pytest.fixture(scope="module", params=sorted(DOCKERFILES))
def image(request: pytest.FixtureRequest) -> Image:
    return Image(DOCKERFILES[request.param])


def test_each_image_installs_the_torch_build_of_its_base_before_the_server(image: Image):
    installs = image.pip_installs()
    torch_at = next(i for i, args in enumerate(installs) if any(a.startswith("torch==") for a in args))
    serve_at = next(i for i, args in enumerate(installs) if ".[serve]" in args)
    assert torch_at < serve_at, "torch must be installed from its own index before .[serve] pulls a default build"
    torch_args = installs[torch_at]
    assert "torch==2.13.0" in torch_args
    index = torch_args[torch_args.index("--index-url") + 1]
    if image.base.startswith("python:"):  # the CPU image
        assert image.base == "python:3.11-slim"
        assert index == "https://download.pytorch.org/whl/cpu"
    else:  # the CUDA image
        assert re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-runtime-\S+", image.base), image.base
        major, minor = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+).*", image.base).groups()
        assert index == f"https://download.pytorch.org/whl/cu{major}{minor}", "torch's CUDA must match the base's"


def test_the_image_runs_as_a_numeric_non_root_user(image: Image):
    uid = image.user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {image.user}: Kubernetes' runAsNonRoot needs a numeric uid"
    assert image.order.index("USER") < image.order.index("ENTRYPOINT")


def test_the_image_serves_on_all_interfaces_on_the_exposed_port_from_the_mounted_model(image: Image):
    overrides = image.overrides()
    assert overrides["server.host"] == "0.0.0.0", "127.0.0.1 inside a container is unreachable from outside"
    assert image.exposed == [int(overrides["server.port"])] == [8000]
    assert overrides["checkpoint"] == MODEL_DIR
    assert MODEL_DIR in image.volumes, "the checkpoint comes from a volume, not from the image or a download"


def test_the_healthcheck_asks_the_liveness_endpoint_on_the_served_port(image: Image):
    port = image.overrides()["server.port"]
    urls = [u for arg in image.healthcheck for u in re.findall(r"https?://[^'\" ]+", arg)]
    assert urls == [f"http://127.0.0.1:{port}{LIVENESS_PATH}"], image.healthcheck


def test_the_docker_build_context_leaves_out_environments_runs_and_git():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for heavy in ("**/.git", "**/.venv", "runs"):
        assert heavy in ignored
    copied = {args.split()[0] for keyword, args in dockerfile_instructions(DOCKERFILES["cpu"].read_text())
              if keyword == "COPY"}
    assert not copied & ignored, "the Dockerfile copies something .dockerignore leaves out"


@pytest.mark.slow
def test_what_the_dockerfile_copies_is_enough_to_build_plugformer_with_every_plugin(tmp_path: Path):
    """The image builds from its COPY lines only: a new top-level file or folder the build needs must be copied."""
    context = tmp_path / "context"
    context.mkdir()
    for keyword, args in dockerfile_instructions(DOCKERFILES["cpu"].read_text()):
        if keyword == "COPY":
            *sources, _ = args.split()
            for source in sources:
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, context / source,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
                else:
                    shutil.copy2(ROOT / source, context / source)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
                            str(context)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("plugformer-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"plugformer/cli/main.py", "plugformer/conf/generate.yaml"} <= names
    for plugin in sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").is_file()):
        assert f"{plugin}/__init__.py" in names, plugin


def test_the_dockerfile_reader_rejects_a_shell_form_entrypoint():
    """The checks above depend on the exec form; a shell-form entrypoint (no signal forwarding) is refused."""
    with pytest.raises(AssertionError, match="exec"):
        exec_form("plugformer serve checkpoint=/models/model")


# ------------------------------------------------------------------------------------------- Kubernetes manifests
def manifest_files() -> list[Path]:
    """Every Kubernetes manifest (kustomization.yaml files are kustomize's own format, checked separately)."""
    return sorted(p for p in KUBE_DIR.rglob("*.yaml") if p.name != "kustomization.yaml")


def load(name: str) -> dict:
    """The one document of deploy/kubernetes/NAME."""
    (document,) = list(yaml.safe_load_all((KUBE_DIR / name).read_text()))
    return document


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: schema validation must work from the schemas that ship with the package."""

    def refuse(*args, **kwargs):
        raise AssertionError("manifest validation tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def kubernetes_validate():
    return pytest.importorskip("kubernetes_validate", reason="install the test extra (kubernetes-validate)")


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(KUBE_DIR)))
def test_every_manifest_is_valid_against_the_pinned_kubernetes_schemas(path: Path, kubernetes_validate, offline):
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents, f"{path.name} is empty"
    for document in documents:
        assert kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True) == "1.33"


def test_a_misspelt_field_fails_validation(kubernetes_validate, offline):
    deployment = copy.deepcopy(load("base/deployment.yaml"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def kustomization(overlay: str) -> dict:
    """deploy/kubernetes/OVERLAY/kustomization.yaml."""
    document = load(f"{overlay}/kustomization.yaml")
    assert document["kind"] == "Kustomization"
    return document


def test_the_base_kustomization_applies_every_manifest_of_the_base():
    resources = kustomization("base")["resources"]
    on_disk = {p.name for p in (KUBE_DIR / "base").glob("*.yaml") if p.name != "kustomization.yaml"}
    assert sorted(resources) == sorted(on_disk) == ["deployment.yaml", "hpa.yaml", "model-pvc.yaml", "service.yaml"]


def json_patch_add(document: dict, path: str, value: object) -> None:
    """RFC 6902 'add' (what the overlays use): the parent must exist, as kustomize requires."""
    *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in path.lstrip("/").split("/")]
    target = document
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    target[last] = value


def test_the_cuda_overlay_gives_each_replica_the_cuda_image_and_one_gpu(kubernetes_validate, offline):
    overlay = kustomization("cuda")
    assert overlay["resources"] == ["../base"]
    deployment = copy.deepcopy(load("base/deployment.yaml"))
    (patch,) = overlay["patches"]
    assert patch["target"] == {"kind": "Deployment", "name": deployment["metadata"]["name"]}
    for operation in yaml.safe_load(patch["patch"]):
        assert operation["op"] == "add"
        json_patch_add(deployment, operation["path"], operation["value"])
    kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    (image,) = overlay["images"]
    assert server["image"] == f"{image['name']}:cpu" and image["newTag"] == "cuda"


def test_the_cpu_autoscaling_overlay_replaces_the_queue_autoscaler(kubernetes_validate, offline):
    overlay = kustomization("cpu-autoscaling")
    assert overlay["resources"] == ["../base", "hpa-cpu.yaml"]
    (patch,) = overlay["patches"]
    deleted = yaml.safe_load(patch["patch"])
    assert deleted.pop("$patch") == "delete"
    queue_hpa = load("base/hpa.yaml")
    # the base's queue-based HPA goes: two autoscalers on one Deployment fight over its replica count
    assert deleted == {"apiVersion": queue_hpa["apiVersion"], "kind": queue_hpa["kind"],
                       "metadata": {"name": queue_hpa["metadata"]["name"]}}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) not installed")
@pytest.mark.parametrize("overlay", ["base", "cuda", "cpu-autoscaling"])
def test_each_kustomization_renders_valid_manifests_with_one_autoscaler(overlay: str, kubernetes_validate):
    rendered = subprocess.run(["kubectl", "kustomize", str(KUBE_DIR / overlay)], capture_output=True, text=True,
                              timeout=120)
    assert rendered.returncode == 0, rendered.stderr
    documents = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    kinds = sorted(d["kind"] for d in documents)
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "PersistentVolumeClaim", "Service"]
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    assert server["image"].endswith(":cuda" if overlay == "cuda" else ":cpu")
    (hpa,) = [d for d in documents if d["kind"] == "HorizontalPodAutoscaler"]
    metric = hpa["spec"]["metrics"][0]
    assert metric["type"] == ("Resource" if overlay == "cpu-autoscaling" else "Pods")


@pytest.fixture(scope="module")
def deployment() -> dict:
    return load("base/deployment.yaml")


@pytest.fixture(scope="module")
def server(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def container_port(server: dict, port: int | str) -> int:
    """A probe's or Service's port (a number or a port name) as the container port number it reaches."""
    by_name = {p["name"]: p["containerPort"] for p in server["ports"]}
    return by_name[port] if isinstance(port, str) else port


def test_probes_ask_the_servers_endpoints_on_the_container_port(server: dict):
    (port,) = [p["containerPort"] for p in server["ports"]]
    assert port == Image(DOCKERFILES["cpu"]).exposed[0]
    probes = {kind: server[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe", "startupProbe")}
    assert probes["livenessProbe"]["path"] == LIVENESS_PATH
    assert probes["readinessProbe"]["path"] == READINESS_PATH
    # the startup probe waits for the model to load, so liveness does not kill a replica that is still loading
    assert probes["startupProbe"]["path"] == READINESS_PATH
    for probe in probes.values():
        assert container_port(server, probe["port"]) == port
    startup = server["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 300, "allow minutes for a large model load"


def test_the_pod_is_scraped_on_the_metrics_endpoint(deployment: dict, server: dict):
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == METRICS_PATH
    assert int(annotations["prometheus.io/port"]) == server["ports"][0]["containerPort"]


def test_the_model_is_mounted_read_only_where_the_image_reads_it(deployment: dict, server: dict):
    (mount,) = [m for m in server["volumeMounts"] if m["mountPath"] == MODEL_DIR]
    assert mount["readOnly"] is True
    volume = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}[mount["name"]]
    claim = load("base/model-pvc.yaml")
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert "ReadOnlyMany" in claim["spec"]["accessModes"], "replicas on several nodes share the checkpoint"
    assert Image(DOCKERFILES["cpu"]).overrides()["checkpoint"] == MODEL_DIR


def test_the_pod_runs_as_the_images_non_root_user_with_limits(deployment: dict, server: dict):
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == Image(DOCKERFILES["cpu"]).user.split(":")[0]
    assert server["securityContext"]["allowPrivilegeEscalation"] is False
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(server["resources"][bound])


def test_the_container_args_add_to_the_images_settings_without_repeating_one(server: dict):
    image_settings = Image(DOCKERFILES["cpu"]).overrides()
    settings([f"{key}={value}" for key, value in image_settings.items()] + server["args"])


def test_termination_grace_covers_the_drain_and_the_servers_shutdown(deployment: dict, server: dict):
    pod = deployment["spec"]["template"]["spec"]
    pre_stop = server["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace_s = float(settings(server["args"])["server.grace_s"])
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + grace_s


def test_the_service_sends_traffic_to_the_deployments_pods(deployment: dict, server: dict):
    service = load("base/service.yaml")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector.items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for port in service["spec"]["ports"]:
        assert container_port(server, port["targetPort"]) == server["ports"][0]["containerPort"]


def test_the_autoscaler_scales_the_deployment_on_queued_requests(deployment: dict):
    hpa = load("base/hpa.yaml")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == QUEUE_METRIC
    assert metric["pods"]["target"]["type"] == "AverageValue"
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


def test_the_cpu_fallback_scales_the_same_deployment_on_cpu_utilisation(deployment: dict):
    hpa = load("cpu-autoscaling/hpa-cpu.yaml")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100


def test_prometheus_adapter_exposes_the_queue_gauge_per_pod_under_its_own_name():
    config = yaml.safe_load(load("prometheus-adapter-config.yaml")["data"]["config.yaml"])
    (rule,) = [r for r in config["rules"] if QUEUE_METRIC in r["seriesQuery"]]
    assert re.fullmatch(rf"{QUEUE_METRIC}\{{.*\}}", rule["seriesQuery"])
    assert re.fullmatch(rule["name"]["matches"], QUEUE_METRIC)
    assert rule["name"]["as"] == QUEUE_METRIC, "the HPA asks the custom-metrics API for exactly this name"
    overrides = rule["resources"]["overrides"]
    assert overrides["pod"] == {"resource": "pod"} and overrides["namespace"] == {"resource": "namespace"}
    for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
        assert placeholder in rule["metricsQuery"]
