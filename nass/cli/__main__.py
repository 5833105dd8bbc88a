"""``python -m nass.cli``: the ``nass`` command."""

import sys

from nass.cli import main

sys.exit(main())
