"""Low-memory mode's page-out of shared objects (edgehub.resident): which mappings it advises, and
that a process keeps running what it paged out."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgehub.resident import SharedObjectMapping, shared_object_mappings


def mapping(header: str, private_clean_kib: int) -> str:
    fields = f"Rss: 9 kB\nShared_Clean: 1 kB\nPrivate_Clean: {private_clean_kib} kB\nAnonymous: 0 kB\n"
    return f"{header}\n{fields}"


ROCKSDICT = "/venv/rocksdict/rocksdict.cpython-311-x86_64-linux-gnu.so"
SMAPS = "".join([
    mapping("55d0c0a00000-55d0c0a21000 r--p 00000000 fe:00 123 /usr/bin/python3.11", 100),
    mapping(f"7f0000000000-7f0000200000 r--p 00000000 fe:00 456 {ROCKSDICT}", 1024),
    mapping(f"7f0000200000-7f0000900000 r-xp 00200000 fe:00 456 {ROCKSDICT}", 5648),
    mapping(f"7f0000900000-7f0000903000 rw-p 00900000 fe:00 456 {ROCKSDICT}", 0),
    mapping("7f0001000000-7f0001100000 r-xp 00000000 fe:00 789 /usr/lib/x86_64-linux-gnu/libcrypto.so.3", 0),
    mapping("7f0002000000-7f0002100000 rw-p 00000000 00:00 0", 0),
    mapping("7f0003000000-7f0003001000 r--p 00000000 fe:00 999 /usr/lib/locale/C.utf8/LC_CTYPE", 4),
    mapping("7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]", 0),
])


def test_read_only_mappings_of_shared_objects_are_taken_and_data_executables_and_anonymous_are_not() -> None:
    assert shared_object_mappings(SMAPS.splitlines(keepends=True)) == [
        SharedObjectMapping(0x7F0000000000, 0x200000, ROCKSDICT, 1024 * 1024),
        SharedObjectMapping(0x7F0000200000, 0x700000, ROCKSDICT, 5648 * 1024),
        SharedObjectMapping(0x7F0001000000, 0x100000, "/usr/lib/x86_64-linux-gnu/libcrypto.so.3", 0),
    ]


PROBE = """
import hashlib, os, sqlite3
from edgehub.resident import WORTH_BYTES, page_out_shared_objects, shared_object_mappings
db = sqlite3.connect(":memory:")
db.execute("create table t (x)")
mappings = shared_object_mappings(open("/proc/self/smaps"))
worth = sum(m.private_clean for m in mappings if os.access(m.path, os.W_OK)) >= WORTH_BYTES
advised = page_out_shared_objects()
db.execute("insert into t values (1)")
row = db.execute("select x from t").fetchone()[0]
print(advised > 0, worth, row, hashlib.sha256(b"a").hexdigest()[:8])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MADV_PAGEOUT is Linux's")
def test_shared_objects_worth_it_are_paged_out_and_the_process_runs_on_after() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         timeout=60)

    advised, worth, row, digest = out.stdout.split()
    assert advised == worth
    assert (row, digest) == ("1", "ca978112")
