"""Build step of the package: the hot-path modules compiled to C extensions with mypyc where it can be,
pure Python everywhere else (the same sources; the pure modules are the fallback, e.g. 32-bit ARM without
a compiler).

``EDGEHUB_COMPILE``: ``auto`` (default) compiles when mypyc imports and a C compiler and the Python headers
are present; ``1`` compiles or fails; ``0`` never compiles (the editable dev install, see the Makefile).
Which modules and why: docs/performance.md.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import setup

COMPILED_MODULES = [
    # MQTT codec: every packet in and out.
    "edgehub/mqtt/packets.py",
    "edgehub/mqtt/wire.py",
    "edgehub/mqtt/decode.py",
    "edgehub/mqtt/encode.py",
    # The MQTT head's session and connection: publish, ack, deliver.
    "edgehub/heads/mqtt/session.py",
    "edgehub/heads/mqtt/connection.py",
    "edgehub/heads/mqtt/server.py",
    "edgehub/iothub/topics.py",
    "edgehub/heads/mqtt/topics.py",
    "edgehub/heads/mqtt/acks.py",
    "edgehub/heads/mqtt/events.py",
    # Ingest, routing, the store's write and read plan, the pump.
    "edgehub/message.py",
    "edgehub/hub.py",
    "edgehub/routing/router.py",
    "edgehub/store/base.py",
    "edgehub/store/kv.py",
    "edgehub/store/records.py",
    "edgehub/store/message_store.py",
    "edgehub/store/group_commit.py",
    "edgehub/store/rocksdb.py",
    "edgehub/endpoints/base.py",
    "edgehub/endpoints/pump.py",
    "edgehub/endpoints/module.py",
    "edgehub/metrics.py",
]


def _can_compile() -> bool:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return shutil.which(compiler) is not None and headers.exists()


def _ext_modules() -> list[object]:
    choice = os.environ.get("EDGEHUB_COMPILE", "auto").strip().lower()
    if choice not in ("auto", "0", "1"):
        sys.exit(f"EDGEHUB_COMPILE must be auto, 0 or 1, not {choice!r}")
    if choice == "0":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        if choice == "1":
            sys.exit("EDGEHUB_COMPILE=1 but mypyc (part of mypy) is not installed")
        print("edgehub: mypyc not installed, building pure Python", file=sys.stderr)
        return []
    if not _can_compile():
        if choice == "1":
            sys.exit("EDGEHUB_COMPILE=1 but no C compiler or Python headers were found")
        print("edgehub: no C compiler or Python headers, building pure Python", file=sys.stderr)
        return []
    # The shared library inside the package (edgehub/_hot_path__mypyc.*.so), importable wherever edgehub is.
    return list(mypycify(COMPILED_MODULES, opt_level="3", debug_level="0", group_name="edgehub._hot_path"))


setup(ext_modules=_ext_modules())
