"""The container image's steps, proven without a Docker engine: the Dockerfile's promises (multi-stage,
non-root, /data volume, ports, health check, stop signal, per-architecture stages), the build context
.dockerignore leaves, the Dockerfile's own install command into a clean virtual environment, then
its ENTRYPOINT and CMD with its environment, probed with its HEALTHCHECK until ready, stopped with
SIGTERM and checked for a clean exit and a store that reopens."""

from __future__ import annotations

import fnmatch
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.hubproc import free_port

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 30.0


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [argument for kw, argument in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their instructions (continuation lines joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, argument = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = argument.split()
            stages.append(Stage(words[0], words[2] if len(words) > 2 and words[1].upper() == "AS" else None))
        elif stages:
            stages[-1].instructions.append((keyword, argument.strip()))
    return stages


STAGES = parse_dockerfile((ROOT / "Dockerfile").read_text())
BY_NAME = {stage.name: stage for stage in STAGES if stage.name}
RUNTIME = BY_NAME["runtime"]


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for argument in stage.all("ENV"):
        for pair in shlex.split(argument):
            name, _, value = pair.partition("=")
            env[name] = value
    return env


def exec_form(argument: str) -> list[str]:
    import json

    words = json.loads(argument)
    assert isinstance(words, list)
    return [str(word) for word in words]


def test_the_image_is_multi_stage_with_stages_for_each_architecture() -> None:
    architectures = ("amd64", "arm64", "arm")
    per_architecture = {f"{kind}-{arch}" for kind in ("build", "runtime") for arch in architectures}
    assert per_architecture <= set(BY_NAME)
    assert STAGES[-1].base == "runtime-${TARGETARCH}"
    # 32-bit ARM: no RocksDB wheel, the SQLite store.
    assert env_of(BY_NAME["runtime-arm"]) == {"storeBackend": "sqlite"}
    # Every build stage has Debian's compiler (mypyc's extensions; what has no armv7 wheel), the
    # runtime image none.
    base_runs = BY_NAME["build-base"].all("RUN")
    assert any("apt-get install" in run and "build-essential" in run for run in base_runs)
    assert all(BY_NAME[f"build-{arch}"].base == "build-base" for arch in architectures)
    assert not any("apt-get" in run for run in RUNTIME.all("RUN"))


def test_the_image_runs_as_non_root_with_the_store_on_a_volume() -> None:
    assert RUNTIME.all("USER") == ["1000:1000"]
    assert env_of(RUNTIME)["StorageFolder"] == "/data"
    assert RUNTIME.all("VOLUME") == ['["/data"]']
    assert RUNTIME.all("EXPOSE") == ["8883 5671 443 9600"]
    assert RUNTIME.all("STOPSIGNAL") == ["SIGTERM"]
    [healthcheck] = RUNTIME.all("HEALTHCHECK")
    assert exec_form(healthcheck.split(" CMD ", 1)[1]) == ["edgehub", "check", "--probe"]


def _ignore_rule_matches(pattern: str, relative: str) -> bool:
    """A .dockerignore pattern against a path (``**/name`` anywhere; a folder covers its contents)."""
    if pattern.startswith("**/"):
        return any(fnmatch.fnmatch(part, pattern[3:]) for part in relative.split("/"))
    pattern = pattern.rstrip("/")
    return fnmatch.fnmatch(relative, pattern) or relative.startswith(pattern + "/")


def build_context() -> list[Path]:
    """The files ``docker build .`` sends, by .dockerignore's rules (the last matching rule wins)."""
    rules = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    sent: list[Path] = []
    for path in sorted(p for p in ROOT.rglob("*") if p.is_file()):
        relative = path.relative_to(ROOT).as_posix()
        included = True
        for rule in rules:
            if _ignore_rule_matches(rule.removeprefix("!"), relative):
                included = rule.startswith("!")
        if included:
            sent.append(path)
    return sent


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_else() -> None:
    sent = {p.relative_to(ROOT).as_posix() for p in build_context()}
    copies = [argument.split()[:-1] for argument in BY_NAME["build"].all("COPY")]

    assert all(any(s == source or s.startswith(source + "/") for s in sent) for c in copies for source in c)
    assert {s.split("/")[0] for s in sent} == {"pyproject.toml", "setup.py", "README.md", "edgehub"}
    assert not any("__pycache__" in s or s.endswith((".so", "_inplace_build.json")) for s in sent)


COMPILED_PASS = os.environ.get("EDGEHUB_EXPECT_COMPILED") == "1"


@pytest.mark.skipif(sys.platform != "linux", reason="the image is Linux")
@pytest.mark.timeout(900 if COMPILED_PASS else 120)  # compiling with mypyc takes minutes on 2 cores
def test_the_images_install_and_start_steps_in_a_clean_environment(tmp_path: Path) -> None:
    # The build context, as .dockerignore leaves it, in a folder of its own.
    context = tmp_path / "context"
    for path in build_context():
        target = context / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    # A clean virtual environment; the image's dependencies come from PyPI, here from the project's
    # environment (offline), put on the path after everything the install step writes.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    prefix = tmp_path / "install"
    site = Path(sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)}))
    venv_site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (venv_site / "00-install.pth").write_text(f"{site}\n")  # COPY --from=build /install /usr/local
    (venv_site / "zz-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    [install] = BY_NAME["build"].all("RUN")
    command = shlex.split(install)
    assert command[:2] == ["pip", "install"]
    assert "--prefix=/install" in command
    command = [str(venv / "bin" / "python"), "-m", *command]
    command = [f"--prefix={prefix}" if word == "--prefix=/install" else word for word in command]
    command[-1:-1] = ["--no-index", "--no-deps", "--no-build-isolation", "--quiet"]
    # The image compiles the hot path (its build stages have a compiler); that takes minutes, so only
    # the compiled pass of `make test` does it here, and the pure pass installs pure Python.
    compiled = COMPILED_PASS
    build_env = {**os.environ, "EDGEHUB_COMPILE": "auto" if compiled else "0"}
    subprocess.run(command, cwd=context, env=build_env, check=True, timeout=900)
    assert (site / "edgehub" / "__init__.py").is_file()
    extensions = list((site / "edgehub").rglob("*.so"))
    assert bool(extensions) == compiled, extensions
    # ENTRYPOINT + CMD with the image's environment; /data is the volume, ports are free ones here.
    data = tmp_path / "volume"
    data.mkdir()
    metrics = free_port()
    env = {k: v for k, v in os.environ.items() if "__" not in k and not k.startswith("PYTHON")}
    env |= env_of(RUNTIME) | {
        "StorageFolder": str(data), "PATH": f"{prefix / 'bin'}:{env['PATH']}",
        "mqttSettings__port": str(free_port()), "amqpSettings__port": str(free_port()),
        "httpSettings__port": str(free_port()), "Metrics__Listener__Port": str(metrics),
    }
    entrypoint = exec_form(RUNTIME.all("ENTRYPOINT")[0]) + exec_form(RUNTIME.all("CMD")[0])
    assert shutil.which(entrypoint[0], path=env["PATH"]) == str(prefix / "bin" / "edgehub")
    [healthcheck] = RUNTIME.all("HEALTHCHECK")
    probe = exec_form(healthcheck.split(" CMD ", 1)[1])
    hub = subprocess.Popen(entrypoint, cwd=data, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while subprocess.run(probe, cwd=data, env=env, check=False, timeout=30).returncode != 0:
            assert hub.poll() is None, "the hub exited before it was ready"
            assert time.monotonic() < deadline, f"not ready within {START_TIMEOUT} s"
            time.sleep(0.2)
        where = "import edgehub; print(edgehub.__file__)"
        which = subprocess.run([str(venv / "bin" / "python"), "-c", where], cwd=data, env=env,
                               capture_output=True, text=True, check=True)
        assert which.stdout.strip().startswith(str(site))  # the installed copy, not the source tree
    finally:
        hub.send_signal(signal.SIGTERM)
        output, _ = hub.communicate(timeout=30)
    assert hub.returncode == 0, output
    assert "flushing pending writes and closing the store" in output
    stats = subprocess.run([*entrypoint[:1], "stats", "--storage", str(data), "--json"], cwd=data, env=env,
                           capture_output=True, text=True, timeout=30, check=False)
    assert stats.returncode == 0, stats.stderr  # the store was closed cleanly and opens again
