"""edgehub: a store-and-forward message hub for edge devices.

The package root holds the version, and refuses a stale in-place build: ``make compiled``
(scripts/build_compiled.py) puts mypyc extensions beside their sources and records the sources'
modification times in ``_inplace_build.json``; once a source changed, its extension would run old code.
See docs/architecture.md §2 for the layout.
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


_refuse_stale_inplace_build()
