"""``python -m macdmp.app``: the ``macdmp`` command."""

import sys

from macdmp.app.main import main

sys.exit(main())
