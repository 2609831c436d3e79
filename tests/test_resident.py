"""Low-memory mode's page-out of shared objects (edgehub.resident): which mappings it advises, and
that a process keeps running what it paged out."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgehub.resident import shared_object_ranges

MAPS = """\
55d0c0a00000-55d0c0a21000 r--p 00000000 fe:00 123 /usr/bin/python3.11
7f0000000000-7f0000200000 r--p 00000000 fe:00 456 /venv/rocksdict/rocksdict.cpython-311-x86_64-linux-gnu.so
7f0000200000-7f0000900000 r-xp 00200000 fe:00 456 /venv/rocksdict/rocksdict.cpython-311-x86_64-linux-gnu.so
7f0000900000-7f0000903000 rw-p 00900000 fe:00 456 /venv/rocksdict/rocksdict.cpython-311-x86_64-linux-gnu.so
7f0001000000-7f0001100000 r-xp 00000000 fe:00 789 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
7f0002000000-7f0002100000 rw-p 00000000 00:00 0
7f0003000000-7f0003001000 r--p 00000000 fe:00 999 /usr/lib/locale/C.utf8/LC_CTYPE
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
"""


def test_read_only_mappings_of_shared_objects_are_taken_and_data_executables_and_anonymous_are_not() -> None:
    assert shared_object_ranges(MAPS) == [
        (0x7F0000000000, 0x200000, "/venv/rocksdict/rocksdict.cpython-311-x86_64-linux-gnu.so"),
        (0x7F0000200000, 0x700000, "/venv/rocksdict/rocksdict.cpython-311-x86_64-linux-gnu.so"),
        (0x7F0001000000, 0x100000, "/usr/lib/x86_64-linux-gnu/libcrypto.so.3"),
    ]


PROBE = """
import hashlib, os, sqlite3
from pathlib import Path
from edgehub.resident import page_out_shared_objects, shared_object_ranges
db = sqlite3.connect(":memory:")
db.execute("create table t (x)")
maps = Path("/proc/self/maps").read_text()
writable = any(os.access(path, os.W_OK) for *_, path in shared_object_ranges(maps))
advised = page_out_shared_objects()
db.execute("insert into t values (1)")
row = db.execute("select x from t").fetchone()[0]
print(advised > 0, writable, row, hashlib.sha256(b"a").hexdigest()[:8])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MADV_PAGEOUT is Linux's")
def test_shared_objects_the_process_may_write_are_paged_out_and_it_runs_on_after() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         timeout=60)

    advised, writable, row, digest = out.stdout.split()
    assert advised == writable
    assert (row, digest) == ("1", "ca978112")
