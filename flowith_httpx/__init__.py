"""flowith_httpx: the Flowith client on httpx, for asyncio and trio.

    from flowith_httpx import FlowithClient

    async with FlowithClient(token) as client:
        reply = await client.generate("Hello!")

``flowith_aiohttp`` offers the same API on aiohttp: only the import changes.
"""

from flowith_httpx.client import FlowithClient
from flowith_proto import public
from flowith_proto.public import *  # noqa: F403  (the shared public names)

__all__ = ["FlowithClient"]
__all__ += public.__all__
