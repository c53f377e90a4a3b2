"""``python -m flowith_httpx``: the ``flowith`` command."""

import sys

from flowith_httpx.cli import main

sys.exit(main())
