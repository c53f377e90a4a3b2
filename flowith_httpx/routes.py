"""The environment's proxies, applied to each request by the core's rule.

httpx reads ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``/``NO_PROXY`` each time it
makes a client (the lanes are made on first use, and again after they idle: a
variable set later changed their route, and theirs alone), and refuses some
``NO_PROXY`` entries the aiohttp transport reads (``[::1]``). So the client's own
httpx clients read nothing: the environment is read once, when the client is made,
and each request, each redirect of it too, goes the way
:class:`flowith_proto.proxies.EnvironmentProxies` says, as on aiohttp.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Mapping

import httpx

from flowith_proto.proxies import EnvironmentProxies

__all__ = ["EnvironmentRoutes"]


class EnvironmentRoutes(httpx.AsyncBaseTransport):
    """An httpx transport that sends each request through the proxy
    ``environment`` (``urllib.request.getproxies()``, read once) names for it, or
    directly: one connection pool per route, each made when this is (so that a proxy
    httpx cannot use, or a SOCKS one without socksio, fails when the client is made).
    """

    def __init__(self, environment: Mapping[str, str], tls: ssl.SSLContext) -> None:
        self._proxies = EnvironmentProxies(environment, socks=True)
        self._direct = httpx.AsyncHTTPTransport(verify=tls)
        self._through = {
            proxy: httpx.AsyncHTTPTransport(verify=tls, proxy=proxy)
            for proxy in sorted(self._proxies.in_use())
        }

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        # The host's ASCII name, as NO_PROXY names it (an IPv6 address unbracketed).
        host = url.raw_host.decode("ascii")
        proxy = self._proxies.for_url(url.scheme, host, url.port)
        route = self._direct if proxy is None else self._through[proxy]
        return await route.handle_async_request(request)

    async def aclose(self) -> None:
        async with contextlib.AsyncExitStack() as routes:  # each closed, whatever fails
            for route in (self._direct, *self._through.values()):
                routes.push_async_callback(route.aclose)
