"""The old client, ``flowith_webapi`` (PyPI ``flowith-webapi`` 1.0.1), as a peer.

The ``bench`` nox session installs it. Elsewhere it may sit in a directory
of its own (``pip install --target /tmp/webapi flowith-webapi==1.0.1``),
which is put on ``sys.path`` when the package is not importable otherwise;
``FLOWITH_WEBAPI_PATH`` names another such directory.

Only the clients' own processes import it: importing it sets the
``flowith`` logger to DEBUG, which would turn on the new library's debug
logging (its loggers are ``flowith.*``) in the same process.

``flowith_webapi.FlowithClient`` takes no base URLs: the edge and Supabase
URLs are module-level constants that its methods read when called. To point
it at the fake, :func:`load` patches those constants in the calling process
only (the benchmark's output says so).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

__all__ = ["DEFAULT_PATH", "PATCH_NOTE", "available", "load", "version"]

DEFAULT_PATH = "/tmp/webapi"
PATCH_NOTE = (
    "flowith_webapi.FlowithClient has no base-URL option: its module constants "
    "EDGE_URL and SUPABASE_URL were patched to the fake's URL in the old client's "
    "benchmark process only"
)


def _add_path() -> None:
    directory = os.environ.get("FLOWITH_WEBAPI_PATH", DEFAULT_PATH)
    if os.path.isdir(directory) and directory not in sys.path:
        sys.path.append(directory)


def available() -> bool:
    """Whether ``flowith_webapi`` can be imported (without importing it)."""
    if importlib.util.find_spec("flowith_webapi") is not None:
        return True
    _add_path()
    return importlib.util.find_spec("flowith_webapi") is not None


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("flowith-webapi")
    except metadata.PackageNotFoundError:
        for directory in sys.path:
            found = list(metadata.distributions(path=[directory], name="flowith-webapi"))
            if found:
                return found[0].version
        return "unknown"


def load(base_url: str) -> ModuleType:
    """Import ``flowith_webapi`` with its base URLs pointed at ``base_url``."""
    if importlib.util.find_spec("flowith_webapi") is None:
        _add_path()
    package = importlib.import_module("flowith_webapi")
    for name in ("flowith_webapi.client", "flowith_webapi.constants"):
        module = importlib.import_module(name)
        module.EDGE_URL = base_url  # type: ignore[attr-defined]
        module.SUPABASE_URL = base_url  # type: ignore[attr-defined]
    return package
