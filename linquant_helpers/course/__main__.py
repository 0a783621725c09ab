"""``python -m linquant_helpers.course``: the ``linquant`` command without installing it."""

import sys

from .cli import main

sys.exit(main())
