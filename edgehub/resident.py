"""Low-memory mode's page-out after start-up (docs/architecture.md §6).

Loading a shared object touches far more of it than a running hub uses: rocksdict's RocksDB runs
static initializers spread over its whole 10 MB (about 7 MiB of it stays resident), OpenSSL and
SQLite set up tables once. Once the hub serves, ``madvise(MADV_PAGEOUT)`` (Linux 5.4+) asks the
kernel to reclaim the read-only file-backed pages of its shared objects now: clean pages, so
nothing is written anywhere; a page the hub runs later faults back in from the page cache or the
file, and pages other processes map too are left where they are.

The kernel pages out a file's pages only for a process that may write that file (or owns it):
a hub run from a virtualenv its own user installed, or as root. In the container image the hub
(uid 1000) runs over root-owned libraries, and not on Linux or with a kernel without
MADV_PAGEOUT: nothing happens (and ctypes, which the call needs, is not even loaded).
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

MADV_PAGEOUT: Final = 21
"""From the kernel's include/uapi/asm-generic/mman-common.h (the same on every architecture)."""
MIB: Final = 1 << 20


def shared_object_ranges(maps: str) -> list[tuple[int, int, str]]:
    """(start, length, path) of each read-only, file-backed mapping of a shared object (``*.so``,
    ``*.so.N``) in the text of ``/proc/PID/maps``; writable mappings (data, relocations) are left out."""
    ranges: list[tuple[int, int, str]] = []
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or "w" in fields[1]:
            continue
        name = fields[5].rsplit("/", 1)[-1]
        if not (name.endswith(".so") or ".so." in name):
            continue
        low, _, high = fields[0].partition("-")
        start, end = int(low, 16), int(high, 16)
        ranges.append((start, end - start, fields[5]))
    return ranges


def page_out_shared_objects() -> int:
    """Advise MADV_PAGEOUT over this process's mappings of shared objects it may write; the bytes
    advised (0 when there are none, not on Linux, or the kernel refuses the advice)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return 0
    ranges = [(start, length) for start, length, path in shared_object_ranges(maps)
              if os.access(path, os.W_OK)]
    if not ranges:
        return 0
    import ctypes  # here only: a hub that never pages out does not keep it

    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    advised = 0
    for start, length in ranges:
        if madvise(start, length, MADV_PAGEOUT) == 0:
            advised += length
        elif ctypes.get_errno() == errno.EINVAL and not advised:
            log.debug("the kernel does not take MADV_PAGEOUT: shared objects stay resident")
            return 0
    log.debug("low-memory mode: %.1f MiB of shared-object mappings paged out", advised / MIB)
    return advised
