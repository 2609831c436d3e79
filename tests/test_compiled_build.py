"""The two builds of the hot path (setup.py): which one this run imports, and the stale-build guard.

`make test` runs the suite twice and says which pass it is in ``EDGEHUB_EXPECT_COMPILED`` (0: pure
Python, 1: the modules of setup.py's COMPILED_MODULES compiled in place by mypyc), so a pass that
silently imported the other build fails here instead of testing the same code twice.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_compiled", ROOT / "scripts" / "build_compiled.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXPECTED = os.environ.get("EDGEHUB_EXPECT_COMPILED")
MODULES: list[str] = _load_build_script()._compiled_modules()


def _module_name(source: str) -> str:
    return source.removesuffix(".py").replace("/", ".")


def test_setup_compiles_the_hot_path_modules_and_they_exist() -> None:
    assert "edgehub/heads/mqtt/session.py" in MODULES
    assert all((ROOT / source).is_file() for source in MODULES)


@pytest.mark.skipif(EXPECTED not in ("0", "1"), reason="EDGEHUB_EXPECT_COMPILED is set by `make test`")
@pytest.mark.parametrize("source", MODULES)
def test_this_pass_imports_the_build_it_expects(source: str) -> None:
    path = importlib.import_module(_module_name(source)).__file__
    assert path is not None
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    assert path.endswith(suffix if EXPECTED == "1" else ".py"), path


@pytest.mark.skipif(EXPECTED not in ("0", "1"), reason="EDGEHUB_EXPECT_COMPILED is set by `make test`")
def test_a_hub_subprocess_imports_the_same_build(tmp_path: Path) -> None:
    where = "import edgehub.heads.mqtt.session as s; print(s.__file__)"
    out = subprocess.run([sys.executable, "-c", where], cwd=tmp_path, capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    assert out.endswith(".py") == (EXPECTED == "0"), out


@pytest.mark.parametrize("value", ["false", "False"])
def test_low_memory_mode_imports_the_pure_python_modules_even_where_compiled(
    tmp_path: Path, value: str,
) -> None:
    where = ("import sys, edgehub.hub, edgehub.heads.mqtt.session as s; "
             "print(s.__file__); print(any('__mypyc' in name for name in sys.modules))")
    env = {**os.environ, "OptimizeForPerformance": value}
    out = subprocess.run([sys.executable, "-c", where], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out[0].endswith("session.py"), out
    assert out[1] == "False"  # mypyc's shared library not loaded either


def _tree_with_record(tmp_path: Path, mtime_ns: int) -> Path:
    package = tmp_path / "edgehub"
    package.mkdir()
    shutil.copy(ROOT / "edgehub" / "__init__.py", package / "__init__.py")
    source = package / "hot.py"
    source.write_text("X = 1\n")
    (package / "_inplace_build.json").write_text(json.dumps({"edgehub/hot.py": mtime_ns}))
    return source


def _import_edgehub(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([sys.executable, "-c", "import edgehub"], cwd=tree, env=env, capture_output=True,
                          text=True, check=False, timeout=60)


def test_an_in_place_build_older_than_its_source_is_refused(tmp_path: Path) -> None:
    source = _tree_with_record(tmp_path, 1)
    result = _import_edgehub(tmp_path)
    assert result.returncode != 0
    assert "edgehub/hot.py changed after `make compiled` built it" in result.stderr
    assert source.exists()


def test_an_in_place_build_matching_its_sources_imports(tmp_path: Path) -> None:
    source = _tree_with_record(tmp_path, 0)
    record = tmp_path / "edgehub" / "_inplace_build.json"
    record.write_text(json.dumps({"edgehub/hot.py": source.stat().st_mtime_ns}))
    result = _import_edgehub(tmp_path)
    assert result.returncode == 0, result.stderr
