"""Logging: the library logs under ``"flowith"`` and never configures it at import
(the old client forced DEBUG on everyone: D25).

Its records may quote what a server sent (a row field it could not use, a malformed
event), which can echo a token: every library logger masks what looks like a
credential in its records (:func:`logger`), and the credentials of every live client
(:func:`flowith_proto.errors.hide_secrets_of`), whatever handlers the application adds.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Protocol

from flowith_proto.errors import CREDENTIAL_HEADER, live_secrets, redact

__all__ = ["logger", "report_left_failure", "set_log_level"]


#: A header as httpcore's DEBUG records quote an answer's: ``(b'set-cookie', b'sid=...')``.
_HEADER_PAIR = re.compile(r"\(b'([^'\\]*)', b'((?:[^'\\]|\\.)*)'\)")


def _masked_header(pair: re.Match[str]) -> str:
    name = pair[1]
    return f"(b'{name}', b'[REDACTED]')" if CREDENTIAL_HEADER.search(name) else pair[0]


class _Masked(logging.Filter):
    """Masks JWTs, credential-named fields (JSON or a Python repr), ``Bearer`` values,
    the values of credential headers as httpcore quotes them, and the live clients'
    credentials in a record's text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a bad format: logging's own handler reports it, as without us
            return True
        try:
            masked = _HEADER_PAIR.sub(_masked_header, text) if "(b'" in text else text
            masked = redact(masked, live_secrets())
        except Exception:  # never from a log call: the shapes of credentials, at least
            masked = redact(text, ())
        if masked != text:
            record.msg, record.args = masked, None
        return True


_MASKED = _Masked()


def logger(name: str) -> logging.Logger:
    """The logger ``name``, masking credentials: the library's own (under
    ``"flowith"``), or a transport's whose records quote what it sends and receives."""
    found = logging.getLogger(name)
    if _MASKED not in found.filters:
        found.addFilter(_MASKED)
    return found


class Finished(Protocol):
    """A finished unit of work, as asyncio's tasks are."""

    def cancelled(self) -> bool: ...

    def exception(self) -> BaseException | None: ...


def report_left_failure(work: Callable[..., object], finished: Finished) -> None:
    """Log how ``work`` failed, if it did, after a cancelled caller left it to
    finish on its own (on asyncio, shielded work runs in a task of its own):
    nobody else sees that failure, which asyncio marks as retrieved."""
    if finished.cancelled():
        return
    error = finished.exception()
    if error is not None:
        function = getattr(work, "func", work)  # a functools.partial's function
        name = getattr(function, "__qualname__", repr(function))
        logger("flowith.client").warning(
            "%s failed after its caller was cancelled: %s: %s", name, type(error).__name__, error
        )


_HANDLER_NAME = "flowith-console"


def set_log_level(level: int | str) -> None:
    """Show the library's logs at ``level`` (``"DEBUG"``, ``logging.INFO``...) on stderr.

    Adds one stderr handler to the ``"flowith"`` logger (once); applications
    with their own logging setup can simply configure that logger instead.
    """
    logger = logging.getLogger("flowith")
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    if not any(h.get_name() == _HANDLER_NAME for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)


logging.getLogger("flowith").addHandler(logging.NullHandler())
