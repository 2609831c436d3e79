"""``python -m edgehub``: the same as the ``edgehub`` console script."""

import sys

from edgehub.cli import main

sys.exit(main())
