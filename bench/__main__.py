"""``python -m bench [scenario ...] [--quick]``: the benchmark suite (bench.suite), or scenarios by name.

Scenarios never fail on a timing; they exist to measure, side by side with a peer.
"""

from __future__ import annotations

import sys

from bench.suite import main

if __name__ == "__main__":
    sys.exit(main())
