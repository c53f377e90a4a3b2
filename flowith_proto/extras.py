"""Which optional extra brings which module, so that a missing one is named.

The core needs only attrs, cattrs and PyJWT. Each transport, the command line,
the fake's server and the pytest fixtures need an extra (``pip install
"flowith[httpx]"``); without it, this says so in one line rather than letting a
bare ``ModuleNotFoundError`` out of some module's imports.
"""

from __future__ import annotations

import importlib.util
import sys

__all__ = ["EXTRAS", "explain", "install_hint", "missing", "needs"]

#: The modules each extra installs (as in pyproject.toml's optional dependencies).
EXTRAS: dict[str, tuple[str, ...]] = {
    "httpx": ("httpx", "anyio", "h11"),
    "aiohttp": ("aiohttp", *(("async_timeout",) if sys.version_info < (3, 11) else ())),
    "trio": ("httpx", "anyio", "h11", "trio"),
}


def install_hint(extra: str) -> str:
    """The command that installs ``extra``."""
    return f'pip install "flowith[{extra}]"'


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that are not installed."""
    return [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]


def needs(what: str, extra: str, absent: list[str]) -> str:
    """The one line that says ``what`` cannot run without ``extra``."""
    return (
        f"{what} needs the {extra} extra ({', '.join(absent)} not installed): "
        f"{install_hint(extra)}"
    )


def explain(error: ModuleNotFoundError, what: str, extra: str) -> None:
    """Raise a ``ModuleNotFoundError`` that names ``extra`` if ``error`` is the
    import of one of its modules failing; return otherwise (the caller re-raises)."""
    top = (error.name or "").partition(".")[0]
    if top in EXTRAS[extra]:
        raise ModuleNotFoundError(needs(what, extra, [top]), name=error.name) from error
