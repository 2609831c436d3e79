"""bench/arm32/run.sh's argument handling and plan, from --dry-run (prints every command, runs none):
the Debian armhf root filesystem built once and cached outside the clone, qemu named explicitly when
binfmt_misc is not registered, the hub installed with --no-deps, the smoke and the quick scenarios."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "bench" / "arm32" / "run.sh"


def _run(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"EDGEHUB_ARM32_CACHE": str(cache)}
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


def test_arm64_uses_its_own_root_and_qemu(tmp_path: Path) -> None:
    done = _run("--dry-run", "--emulated", "--arch", "arm64", "--scenarios", "router", cache=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"debootstrap --arch=arm64 --foreign --variant=minbase --include=ca-certificates trixie " \
           f"{tmp_path / 'trixie-arm64'}" in done.stderr
    assert "/usr/bin/qemu-aarch64-static" in done.stderr
    assert "--results /opt/edgehub/results smoke router" in done.stderr


def test_native_run_installs_over_debian_packages_with_no_deps(tmp_path: Path) -> None:
    done = _run("--dry-run", "--native", cache=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"python3 -m venv --system-site-packages {tmp_path / 'venv-native'}" in done.stderr
    assert "pip install -q --no-deps --no-build-isolation" in done.stderr
    assert "debootstrap" not in done.stderr
    assert "-m bench --quick --results" in done.stderr
    assert "bench/results smoke router store mqtt memory" in done.stderr
