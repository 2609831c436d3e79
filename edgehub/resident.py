"""Low-memory mode's page-out after start-up (docs/architecture.md §6).

Loading a shared object touches far more of it than a running hub uses: rocksdict's RocksDB runs
static initializers spread over its whole 10 MB (about 7 MiB of it stays resident), OpenSSL and
SQLite set up tables once. Once the hub serves, ``madvise(MADV_PAGEOUT)`` (Linux 5.4+) asks the
kernel to reclaim the read-only file-backed pages of its shared objects now: clean pages, so
nothing is written anywhere; a page the hub runs later faults back in from the page cache or the
file. Pages other processes map too stay where they are, so only mappings with private resident
pages are advised, and only when those come to 1 MiB or more.

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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

log = logging.getLogger(__name__)

MADV_PAGEOUT: Final = 21
"""From the kernel's include/uapi/asm-generic/mman-common.h (the same on every architecture)."""
MIB: Final = 1 << 20
WORTH_BYTES: Final = MIB
"""Least resident private pages worth paging out: ctypes, which the call needs, costs 0.5 MiB."""


@dataclass(frozen=True, slots=True)
class SharedObjectMapping:
    """A read-only, file-backed mapping of a shared object, from ``/proc/PID/smaps``."""

    start: int
    length: int
    path: str
    private_clean: int
    """Resident bytes no other process maps (only those can be reclaimed)."""


def shared_object_mappings(smaps: Iterable[str]) -> list[SharedObjectMapping]:
    """The read-only mappings of shared objects (``*.so``, ``*.so.N``) in the lines of
    ``/proc/PID/smaps``; writable mappings (data, relocations) are left out."""
    mappings: list[SharedObjectMapping] = []
    current: tuple[int, int, str] | None = None
    for line in smaps:
        fields = line.rstrip().split(maxsplit=5)
        if not fields:
            continue
        if not fields[0].endswith(":"):  # a mapping's header: range, perms, offset, dev, inode, path
            current = None
            name = fields[5].rsplit("/", 1)[-1] if len(fields) == 6 else ""
            if "w" not in fields[1] and (name.endswith(".so") or ".so." in name):
                low, _, high = fields[0].partition("-")
                current = (int(low, 16), int(high, 16) - int(low, 16), fields[5])
        elif fields[0] == "Private_Clean:" and current is not None:
            mappings.append(SharedObjectMapping(*current, private_clean=int(fields[1]) * 1024))
            current = None
    return mappings


def page_out_shared_objects() -> int:
    """Advise MADV_PAGEOUT over this process's mappings of shared objects it may write, when their
    private resident pages are worth it; the bytes advised (0 when not, not on Linux, or the
    kernel refuses the advice)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        with open("/proc/self/smaps") as smaps:  # line by line: the whole text is ~0.5 MB
            mappings = [mapping for mapping in shared_object_mappings(smaps)
                        if mapping.private_clean and os.access(mapping.path, os.W_OK)]
    except OSError:
        return 0
    if sum(mapping.private_clean for mapping in mappings) < WORTH_BYTES:
        return 0
    import ctypes  # here only: a hub that never pages out does not keep it

    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    advised = 0
    for mapping in mappings:
        if madvise(mapping.start, mapping.length, MADV_PAGEOUT) == 0:
            advised += mapping.length
        elif ctypes.get_errno() == errno.EINVAL and not advised:
            log.debug("the kernel does not take MADV_PAGEOUT: shared objects stay resident")
            return 0
    log.debug("low-memory mode: %.1f MiB of shared-object mappings paged out", advised / MIB)
    return advised
