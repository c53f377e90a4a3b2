"""flowith_aiohttp: the Flowith client on aiohttp (asyncio).

    from flowith_aiohttp import FlowithClient

    async with FlowithClient(token) as client:
        reply = await client.generate("Hello!")

``flowith_httpx`` offers the same API on httpx (asyncio and trio): only the import changes.
"""

from flowith_proto import extras, public
from flowith_proto.public import *  # noqa: F403  (the shared public names)

try:
    from flowith_aiohttp.client import FlowithClient
except ModuleNotFoundError as exc:
    extras.explain(exc, "flowith_aiohttp", "aiohttp")
    raise

__all__ = ["FlowithClient"]
__all__ += public.__all__
