"""``python -m fmha_guard``: the ``fmha-guard`` command."""

import sys

from .cli import main

sys.exit(main())
