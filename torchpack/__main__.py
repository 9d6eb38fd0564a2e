"""``python -m torchpack``: the same as the ``torchpack`` command."""

import sys

from torchpack.cli import main

sys.exit(main())
