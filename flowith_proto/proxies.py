"""Which proxy, if any, a request takes when the environment names proxies.

httpx applies ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``/``NO_PROXY`` itself;
a transport that does not (aiohttp, unless told to read them on every request)
asks :class:`EnvironmentProxies` instead, so that swapping the transport never
changes the route. The transport reads the environment (``urllib.request.getproxies()``)
and hands the mapping in: this module reads nothing itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from flowith_proto.errors import FlowithError

__all__ = ["EnvironmentProxies", "bypassed"]


def bypassed(host: str, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` names ``host``: ``*``, the host itself, or a domain it
    is in (``example.com`` and ``.example.com`` both cover ``api.example.com``)."""
    host = host.lower().rstrip(".")
    for entry in no_proxy.split(","):
        name = entry.strip().lower()
        if name.startswith("[") and "]" in name:  # [::1]:8080
            name = name[1 : name.index("]")]
        elif name.count(":") == 1:  # host:port (a bare IPv6 address has more colons)
            name = name.split(":")[0]
        name = name.lstrip(".").rstrip(".")
        if name == "*" or (name and (host == name or host.endswith("." + name))):
            return True
    return False


class EnvironmentProxies:
    """The proxies of an environment (``{"http": url, "https": url, "all": url,
    "no": "host,..."}``, as ``urllib.request.getproxies()`` gives them), decided
    once per scheme and host, for a transport that speaks HTTP proxies only."""

    def __init__(self, proxies: Mapping[str, str]) -> None:
        self._proxies = dict(proxies)
        self._routes: dict[tuple[str, str], str | None] = {}

    def for_url(self, scheme: str, host: str) -> str | None:
        """The proxy URL for a request to ``scheme://host``, or ``None``.

        Raises :class:`~flowith_proto.errors.FlowithError` when the environment
        names a proxy that is not an HTTP one (``socks5://``...): going around a
        proxy the user set would be worse than failing.
        """
        key = (scheme, host)
        if key not in self._routes:
            proxy = self._proxies.get(scheme) or self._proxies.get("all")
            if proxy and bypassed(host, self._proxies.get("no", "")):
                proxy = None
            if proxy and not proxy.startswith(("http://", "https://")):
                where = urlsplit(proxy)  # its user and password stay out of the message
                raise FlowithError(
                    f"the environment names the proxy {where.scheme}://{where.hostname} "
                    f"for {scheme}:// requests; this transport speaks HTTP proxies only: "
                    "pass proxy=, exempt the host with NO_PROXY, or use the httpx transport "
                    "(with socksio installed)"
                )
            self._routes[key] = proxy
        return self._routes[key]
