"""Compile the hot-path modules in place with mypyc, or remove them again.

``python scripts/build_compiled.py`` builds the extensions of setup.py's COMPILED_MODULES beside their
sources (Python imports an extension module before the .py of the same name) and records each source's
modification time in ``edgehub/_inplace_build.json``; ``edgehub/__init__.py`` refuses to import a tree
whose sources changed since (a stale extension would run old code). ``--clean`` removes the extensions,
mypyc's shared library and the record. ``--check`` only says whether this machine can compile (exit 0)
or not (exit 3); ``--if-possible`` builds where it can and exits 0 either way. Used by
``make compiled``, ``make clean-compiled``, ``make test`` and ``make bench``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "edgehub" / "_inplace_build.json"
CANNOT_COMPILE = 3


def _compiled_modules() -> list[str]:
    text = (ROOT / "setup.py").read_text()
    block = text.split("COMPILED_MODULES = [", 1)[1].split("]", 1)[0]
    return [line.split('"')[1] for line in block.splitlines() if line.strip().startswith('"')]


def _extension(source: str) -> Path:
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    return ROOT / (source.removesuffix(".py") + suffix)


def clean() -> None:
    for source in _compiled_modules():
        _extension(source).unlink(missing_ok=True)
    for shared in [*ROOT.glob("*__mypyc*"), *(ROOT / "edgehub").glob("*__mypyc*")]:
        shared.unlink()
    RECORD.unlink(missing_ok=True)
    shutil.rmtree(ROOT / "build", ignore_errors=True)


def can_compile() -> bool:
    try:
        import mypyc  # noqa: F401
    except ImportError:
        return False
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return shutil.which(compiler) is not None and headers.exists()


def up_to_date() -> bool:
    """Whether the in-place build on record matches every source (and its extensions exist)."""
    if not RECORD.exists():
        return False
    built: dict[str, int] = json.loads(RECORD.read_text())
    return built.keys() == set(_compiled_modules()) and all(
        (ROOT / source).stat().st_mtime_ns == mtime and _extension(source).exists()
        for source, mtime in built.items())


def build() -> None:
    if up_to_date():
        print("compiled modules are up to date", file=sys.stderr)
        return
    clean()
    started = time.monotonic()
    print(f"compiling {len(_compiled_modules())} modules with mypyc (about 2 minutes on 2 cores) ...",
          file=sys.stderr, flush=True)
    env = {**os.environ, "EDGEHUB_COMPILE": "1"}
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=ROOT, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    sources = {source: (ROOT / source).stat().st_mtime_ns for source in _compiled_modules()}
    RECORD.write_text(json.dumps(sources, indent=1) + "\n")
    print(f"compiled in {time.monotonic() - started:.0f} s", file=sys.stderr)


def main() -> int:
    if "--clean" in sys.argv:
        clean()
        return 0
    if not can_compile():
        print("no mypyc, C compiler or Python headers here: nothing compiled", file=sys.stderr)
        return 0 if "--if-possible" in sys.argv else CANNOT_COMPILE
    if "--check" not in sys.argv:
        build()
    return 0


if __name__ == "__main__":
    sys.exit(main())
