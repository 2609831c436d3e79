"""bench/arm32/run.sh's argument handling and plan, from --dry-run (prints every command, runs none):
the Debian armhf (or arm64) root filesystem built once and cached outside the clone, qemu named explicitly
when binfmt_misc is not registered, the hub installed with --no-deps (on arm64 beside rocksdict's aarch64
wheel), the smoke and the quick scenarios."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "bench" / "arm32" / "run.sh"


def _run(*args: str, cache: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"EDGEHUB_ARM32_CACHE": str(cache)} | ({"PATH": path} if path else {})
    return subprocess.run(["sh", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60,
                          check=False)


def test_unknown_argument_and_architecture_are_refused(tmp_path: Path) -> None:
    bad = _run("--bogus", cache=tmp_path)
    assert bad.returncode == 2
    assert "unknown argument: --bogus" in bad.stderr
    arch = _run("--arch", "sparc", cache=tmp_path)
    assert arch.returncode == 2
    assert "--arch must be armhf or arm64, not sparc" in arch.stderr


def test_help_lists_the_options(tmp_path: Path) -> None:
    done = _run("--help", cache=tmp_path)
    assert done.returncode == 0
    assert "--smoke-only" in done.stdout
    assert "--native|--emulated" in done.stdout


def test_first_emulated_run_builds_a_trixie_armhf_root_in_the_cache(tmp_path: Path) -> None:
    done = _run("--dry-run", "--emulated", cache=tmp_path)
    assert done.returncode == 0, done.stderr
    root = tmp_path / "trixie-armhf"
    plan = done.stderr
    debootstrap = "debootstrap --arch=armhf --foreign --variant=minbase --include=ca-certificates"
    assert f"{debootstrap} trixie {root}" in plan
    assert f"chroot {root} /debootstrap/debootstrap --second-stage" in plan
    assert "apt-get install -y -qq --no-install-recommends python3 python3-venv" in plan
    assert "python3-uvloop" in plan
    assert "python3-aiohttp" in plan
    assert "pydantic" not in plan  # the hub's settings need none
    assert "pip install -q --no-deps --no-index --force-reinstall wheels/*.whl" in plan
    # binfmt_misc is not consulted in a dry run: every ARM program goes through qemu by name
    assert f"chroot {root} /usr/bin/qemu-arm-static /bin/sh -c" in plan
    assert "-m bench --quick --no-plots --results /opt/edgehub/results smoke router store mqtt memory" in plan
    assert "rocksdict" not in plan  # no armhf wheel: SQLite


def test_a_cached_root_is_reused_without_debootstrap(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / ".edgehub-base-ready").touch()
    (root / ".edgehub-rootfs-ready").touch()
    done = _run("--dry-run", "--emulated", "--rootfs", str(root), "--smoke-only", cache=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"reusing the root filesystem in {root}" in done.stderr
    assert "debootstrap --arch" not in done.stderr
    assert "-m bench.arm32.smoke" in done.stderr
    assert "-m bench --quick" not in done.stderr


def test_arm64_uses_its_own_root_and_qemu_and_adds_the_rocksdict_wheel(tmp_path: Path) -> None:
    done = _run("--dry-run", "--emulated", "--arch", "arm64", "--scenarios", "router", cache=tmp_path)
    assert done.returncode == 0, done.stderr
    root = tmp_path / "trixie-arm64"
    plan = done.stderr
    debootstrap = "debootstrap --arch=arm64 --foreign --variant=minbase --include=ca-certificates"
    assert f"{debootstrap} trixie {root}" in plan
    assert "python3-uvloop" in plan
    # rocksdict as pyproject.toml requires it, the aarch64 wheel for trixie's Python 3.13, fetched on the host
    # into the wheels the root filesystem's venv installs offline
    assert "pip download -q --no-deps --only-binary=:all: --implementation cp --python-version 3.13 " \
           "--platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 " \
           f"-d {root}/opt/edgehub/wheels rocksdict>=" in plan
    assert f"chroot {root} /usr/bin/qemu-aarch64-static /bin/sh -c cd /opt/edgehub && " \
           "venv/bin/pip install -q --no-deps --no-index --force-reinstall wheels/*.whl" in plan
    assert "--results /opt/edgehub/results smoke router" in plan


def test_native_arm64_installs_rocksdict_from_its_wheel(tmp_path: Path) -> None:
    done = _run("--dry-run", "--native", "--arch", "arm64", cache=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{tmp_path / 'venv-native'}/bin/pip install -q --only-binary=:all: rocksdict>=" in done.stderr
    assert "debootstrap" not in done.stderr


def test_an_emulated_run_installs_a_pure_python_wheel_and_its_one_extra_dependency(tmp_path: Path) -> None:
    done = _run("--dry-run", cache=tmp_path)
    assert done.returncode == 0, done.stderr
    [wheel] = [line for line in done.stderr.splitlines() if "-m pip wheel" in line]
    assert "env EDGEHUB_COMPILE=0 " in wheel
    assert "--no-deps --no-build-isolation" in wheel
    assert "pip download -q --no-deps --only-binary=:all:" in done.stderr
    assert "mypy-extensions>=1.0" in done.stderr


def test_native_run_installs_over_debian_packages_with_no_deps(tmp_path: Path) -> None:
    done = _run("--dry-run", "--native", cache=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"python3 -m venv --system-site-packages {tmp_path / 'venv-native'}" in done.stderr
    assert "pip install -q --no-deps --no-build-isolation" in done.stderr
    assert "debootstrap" not in done.stderr
    assert "-m bench --quick --results" in done.stderr
    assert "bench/results smoke router store mqtt memory" in done.stderr


def test_on_an_arm64_debian_the_default_is_a_native_arm64_run(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    dpkg = bin_dir / "dpkg"
    dpkg.write_text("#!/bin/sh\n[ \"$1\" = --print-architecture ] && echo arm64\n")
    dpkg.chmod(0o755)
    done = _run("--dry-run", cache=tmp_path, path=f"{bin_dir}:{os.environ['PATH']}")
    assert done.returncode == 0, done.stderr
    assert "arch=arm64 release=trixie mode=native" in done.stderr
    assert "install -q --only-binary=:all: rocksdict>=" in done.stderr
    assert "debootstrap" not in done.stderr
