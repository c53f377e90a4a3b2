"""Logging: the library logs under ``"flowith"`` and never configures it at import
(the old client forced DEBUG on everyone: D25)."""

from __future__ import annotations

import logging

__all__ = ["set_log_level"]

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
