"""``python -m jaxopt_zoo.cli``: the ``jaxopt-zoo`` command."""

import sys

from jaxopt_zoo.cli import main

sys.exit(main())
