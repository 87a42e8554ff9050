"""``python -m dnmf.cli``: the ``dnmf`` command."""

import sys

from .main import main

sys.exit(main())
