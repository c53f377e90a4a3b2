"""flowith_httpx: the Flowith client on httpx, for asyncio and trio.

    from flowith_httpx import FlowithClient

    async with FlowithClient(token) as client:
        reply = await client.generate("Hello!")

``flowith_aiohttp`` offers the same API on aiohttp: only the import changes.

``FlowithClient`` is imported when first used: the package also holds the pytest
fixtures, which pytest loads in every project that has flowith installed, with or
without the ``httpx`` extra this client needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowith_proto import extras, public
from flowith_proto.public import *  # noqa: F403  (the shared public names)

if TYPE_CHECKING:
    from flowith_httpx.client import FlowithClient

__all__ = ["FlowithClient"]
__all__ += public.__all__


if not TYPE_CHECKING:  # a module __getattr__ would let a type checker take any name

    def __dir__() -> list[str]:
        return sorted({*globals(), "FlowithClient"})

    def __getattr__(name: str) -> object:
        if name != "FlowithClient":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        try:
            from flowith_httpx.client import FlowithClient
        except ModuleNotFoundError as exc:
            extras.explain(exc, "flowith_httpx", "httpx")
            raise
        globals()["FlowithClient"] = FlowithClient  # later lookups skip this function
        return FlowithClient
