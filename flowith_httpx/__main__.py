"""The ``flowith`` command's entry point, also run by ``python -m flowith_httpx``.

The command runs on the ``httpx`` extra. Without it, this says in one line
which extra to install (exit code 2, as for any choice whose extra is missing)
before anything imports it.
"""

from __future__ import annotations

import sys

from flowith_proto import extras

__all__ = ["run"]


def run() -> int:
    absent = extras.missing("httpx")
    if absent:
        print(f"flowith: {extras.needs('the flowith command', 'httpx', absent)}", file=sys.stderr)
        return 2
    from flowith_httpx.cli import main

    return main()


if __name__ == "__main__":
    sys.exit(run())
