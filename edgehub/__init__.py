"""edgehub: a store-and-forward message hub for edge devices.

The package root holds the version and decides which build of the hot path is imported:
- in low-memory mode (``OptimizeForPerformance=false`` in the environment) the pure-Python modules,
  even where mypyc extensions are installed: the compiled build idles about 1.3 MiB higher;
- otherwise the extensions where they exist, refusing a stale in-place build: ``make compiled``
  (scripts/build_compiled.py) puts them beside their sources and records the sources' modification
  times in ``_inplace_build.json``; once a source changed, its extension would run old code.
See docs/architecture.md §2 for the layout, docs/performance.md for the compiled build.
"""

from __future__ import annotations

__version__ = "0.1.0"


def _refuse_stale_inplace_build() -> None:
    import os

    record = os.path.join(os.path.dirname(__file__), "_inplace_build.json")
    if not os.path.exists(record):
        return  # an installed package or a pure-Python tree: nothing to compare
    import json

    root = os.path.dirname(os.path.dirname(record))
    with open(record) as file:
        built: dict[str, int] = json.load(file)
    for source, built_ns in built.items():
        path = os.path.join(root, source)
        if not os.path.exists(path) or os.stat(path).st_mtime_ns != built_ns:
            raise ImportError(f"edgehub: {source} changed after `make compiled` built it; "
                              "run `make compiled` again, or `make clean-compiled` for pure Python")


def _low_memory_mode() -> bool:
    import os

    return any(key.lower() == "optimizeforperformance" and value.strip().lower() == "false"
               for key, value in os.environ.items())


def _import_pure_python() -> None:
    """Put a finder first that loads every ``edgehub.*`` module from its ``.py`` source, so no
    compiled extension (nor mypyc's shared library) is loaded. Packages go to the usual finders."""
    import importlib.machinery
    import importlib.util
    import os
    import sys
    from collections.abc import Sequence
    from types import ModuleType

    class PurePythonFinder:
        @staticmethod
        def find_spec(
            fullname: str, path: Sequence[str] | None, target: ModuleType | None = None,
        ) -> importlib.machinery.ModuleSpec | None:
            if not fullname.startswith("edgehub.") or not path:
                return None
            name = fullname.rpartition(".")[2]
            for entry in path:
                source = os.path.join(entry, name + ".py")
                if os.path.isfile(source):
                    return importlib.util.spec_from_file_location(fullname, source)
            return None

    here = os.path.dirname(__file__)
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    if any(os.path.exists(os.path.join(here, "hub" + suffix)) for suffix in suffixes):
        sys.meta_path.insert(0, PurePythonFinder)  # only where a compiled build is installed


if _low_memory_mode():
    _import_pure_python()
else:
    _refuse_stale_inplace_build()
