"""flowith_httpx: the httpx transport for the Flowith client (asyncio and trio)."""
