"""Which proxy, if any, a request takes when the environment names proxies.

httpx applies ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``/``NO_PROXY`` itself;
a transport that does not (aiohttp, unless told to read them on every request)
asks :class:`EnvironmentProxies` instead, so that swapping the transport never
changes the route. The transport reads the environment (``urllib.request.getproxies()``)
and hands the mapping in: this module reads nothing itself.
"""

from __future__ import annotations

from collections.abc import Mapping

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
    once per scheme and host. HTTP(S) proxy URLs only: ``socks5://`` and the
    like are ignored, as a transport that speaks HTTP proxies only must."""

    def __init__(self, proxies: Mapping[str, str]) -> None:
        self._proxies = dict(proxies)
        self._routes: dict[tuple[str, str], str | None] = {}

    def for_url(self, scheme: str, host: str) -> str | None:
        """The proxy URL for a request to ``scheme://host``, or ``None``."""
        key = (scheme, host)
        if key not in self._routes:
            proxy = self._proxies.get(scheme) or self._proxies.get("all")
            if proxy and not proxy.startswith(("http://", "https://")):
                proxy = None
            if proxy and bypassed(host, self._proxies.get("no", "")):
                proxy = None
            self._routes[key] = proxy
        return self._routes[key]
