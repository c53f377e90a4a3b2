"""Which proxy, if any, a request takes when the environment names proxies.

Both transports ask :class:`EnvironmentProxies` rather than let their HTTP library
read ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``/``NO_PROXY``: aiohttp would read
them (and ``~/.netrc``) on every request, httpx each time it makes a client, and
each by its own rules. One rule, read once when the client is made, means that
swapping the transport never changes the route. It is httpx's reading of
``NO_PROXY``, minus where httpx fails (see :func:`bypassed`). The transport reads
the environment (``urllib.request.getproxies()``) and hands the mapping in: this
module reads nothing itself.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit

from flowith_proto.errors import FlowithError
from flowith_proto.urls import ascii_host

__all__ = ["EnvironmentProxies", "bypassed", "lower_scheme", "refused_setting", "well_formed"]


def lower_scheme(url: str) -> str:
    """``url`` with its scheme in lower case: ``HTTP://proxy:3128`` is an HTTP proxy
    (RFC 3986 3.1), which a check of ``startswith("http://")`` would refuse."""
    scheme, separator, rest = url.partition("://")
    return scheme.lower() + separator + rest if separator else url


def well_formed(url: str) -> bool:
    """Whether proxy ``url`` names a host and no port but a number from 0 to 65535,
    so that a transport can refuse it when the client is made, as httpx does, rather
    than fail every call. Spaces around it are refused too: ``urlsplit`` strips them,
    but a transport then reads `` http`` as the scheme."""
    if url != url.strip():
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # reading it checks it
    except ValueError:  # a port that is no number, or out of range; a broken [IPv6]
        return False
    return bool(parts.hostname)


def bypassed(host: str, no_proxy: str, *, scheme: str = "https", port: int | None = None) -> bool:
    """Whether ``NO_PROXY`` exempts ``scheme://host[:port]`` by httpx's reading of it,
    so that both transports take the same route (a scheme's default port, in the
    URL or an entry, counts as none, as httpx normalizes it):

    * ``*`` exempts every host;
    * an IP address exempts that address however a URL writes it (``::1`` is
      ``0:0:0:0:0:0:0:1``), and ``localhost`` that host only;
    * ``example.com`` exempts it and its subdomains, ``.example.com`` its
      subdomains only;
    * an entry with a port (``example.com:8080``) applies to that port only, and
      one with a scheme (``http://example.com``) to that scheme only.

    Where httpx fails, it reads on: an IPv6 address in brackets (``[::1]``,
    ``[::1]:8080``) is that address, and a name that is not ASCII (``bücher.example``)
    is its IDNA form, as ``host`` must be given (``xn--bcher-kva.example``). An entry
    that names no host (``all://``, ``*://example.com``) exempts nothing: going
    around the proxy is not what a typo should do.
    """
    host = host.lower()
    port = _without_default(scheme, port)
    for entry in no_proxy.split(","):
        name = entry.strip()
        if name == "*":
            return True
        if not name:
            continue
        try:
            pattern = urlsplit(_no_proxy_url(_ascii(name)))
            pattern_port = pattern.port
        except ValueError:  # not a host httpx could read either: it exempts nothing
            continue
        if not pattern.hostname:
            continue
        pattern_scheme = "" if pattern.scheme == "all" else pattern.scheme
        if pattern_scheme and pattern_scheme != scheme:
            continue
        pattern_port = _without_default(pattern_scheme, pattern_port)
        if pattern_port is not None and pattern_port != port:
            continue
        if _host_matches(pattern.hostname or "", host):
            return True
    return False


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _without_default(scheme: str, port: int | None) -> int | None:
    return None if port == _DEFAULT_PORTS.get(scheme) else port


def _ascii(entry: str) -> str:
    """A ``NO_PROXY`` entry whose host name is not ASCII with that name in its IDNA
    form, as httpx and yarl write a URL's host (``.bücher.example`` is
    ``.xn--bcher-kva.example``, ``https://faß.de`` is ``https://xn--fa-hia.de``); a
    ``ValueError`` if it has none."""
    if entry.isascii():
        return entry
    scheme, separator, rest = entry.rpartition("://")
    ends = [at for at in (rest.find(":"), rest.find("/")) if at >= 0]
    host, tail = rest[: min(ends, default=len(rest))], rest[min(ends, default=len(rest)) :]
    dot = "." if host.startswith(".") else ""
    return f"{scheme}{separator}{dot}{ascii_host(host[len(dot) :])}{tail}"


def _no_proxy_url(name: str) -> str:
    """A ``NO_PROXY`` entry as the URL pattern httpx makes of it."""
    if "://" in name:
        return name
    if name.startswith("["):  # an IPv6 address in brackets, maybe with a port
        return f"all://{name}"
    address = name.split("/")[0]
    with contextlib.suppress(ValueError):
        ipaddress.IPv4Address(address)
        return f"all://{name}"
    with contextlib.suppress(ValueError):
        ipaddress.IPv6Address(address)
        return f"all://[{name}]"
    if name.lower() == "localhost":
        return f"all://{name}"
    return f"all://*{name}"


def _host_matches(pattern: str, host: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*."):  # subdomains only
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    if pattern.startswith("*"):  # the domain and its subdomains
        domain = pattern[1:]
        return host == domain or host.endswith("." + domain)
    return host == pattern or _same_address(pattern, host)


def _same_address(pattern: str, host: str) -> bool:
    """Whether two IP addresses written differently are one (``::1`` and
    ``0:0:0:0:0:0:0:1``): httpx hands a URL's host on as it was written, and
    aiohttp's yarl shortens it, so text alone would route them apart."""
    try:
        return ipaddress.ip_address(pattern) == ipaddress.ip_address(host)
    except ValueError:
        return False


#: Routes remembered at most: a long-lived client downloading from the hosts its users
#: name would otherwise keep one per host for ever (deciding one again is cheap).
MAX_ROUTES = 256


class EnvironmentProxies:
    """The proxies of an environment (``{"http": url, "https": url, "all": url,
    "no": "host,..."}``, as ``urllib.request.getproxies()`` gives them), decided
    once per scheme and host. Both transports route by it, so that swapping them
    never changes the route; ``socks`` says whether the transport speaks SOCKS
    proxies too (httpx with socksio), or HTTP ones only (aiohttp)."""

    def __init__(self, proxies: Mapping[str, str], *, socks: bool = False) -> None:
        self._proxies = dict(proxies)
        self._socks = socks
        self._routes: dict[tuple[str, str, int | None], str | None] = {}

    def _named(self, scheme: str) -> str | None:
        """The proxy the environment names for ``scheme://`` requests, as a URL with a
        scheme in lower case (one named without a scheme is an HTTP one, as httpx
        reads it), or ``None``."""
        proxy = self._proxies.get(scheme) or self._proxies.get("all")
        if not proxy:
            return None
        return lower_scheme(proxy) if "://" in proxy else "http://" + proxy

    def in_use(self) -> set[str]:
        """Every proxy a request (``http://`` or ``https://``) may go through, as
        :meth:`for_url` names them: a transport can make what each needs up front."""
        return {proxy for scheme in ("http", "https") if (proxy := self._named(scheme))}

    def for_url(self, scheme: str, host: str, port: int | None = None) -> str | None:
        """The proxy URL for a request to ``scheme://host`` (``host`` in ASCII, its
        IDNA form; ``port``: see :func:`bypassed`), or ``None``.

        Raises :class:`~flowith_proto.errors.FlowithError`, for a transport that
        speaks HTTP proxies only, when the environment names a proxy that is not an
        HTTP one (``socks5://``...): going around a proxy the user set would be
        worse than failing.
        """
        key = (scheme, host, port)
        if key not in self._routes:
            proxy = self._named(scheme)
            if proxy and bypassed(host, self._proxies.get("no", ""), scheme=scheme, port=port):
                proxy = None
            if proxy and not self._socks and not proxy.startswith(("http://", "https://")):
                where = urlsplit(proxy)  # its user and password stay out of the message
                raise FlowithError(
                    f"the environment names the proxy {where.scheme}://{where.hostname} "
                    f"for {scheme}:// requests; this transport speaks HTTP proxies only: "
                    "pass proxy=, exempt the host with NO_PROXY, or use the httpx transport "
                    "(with socksio installed)"
                )
            if len(self._routes) >= MAX_ROUTES:
                del self._routes[next(iter(self._routes))]  # the oldest
            self._routes[key] = proxy
            return proxy
        return self._routes[key]

    def well_formed(self) -> bool:
        """Whether every proxy the environment names for HTTP requests (``HTTP_PROXY``,
        ``HTTPS_PROXY``, ``ALL_PROXY``) is :func:`well_formed` (one named without a
        scheme is an HTTP one)."""
        return all(
            well_formed(url if "://" in url else "http://" + url)
            for scheme, url in self._proxies.items()
            if scheme in ("http", "https", "all") and url
        )


def refused_setting(proxy: str | None, environment: Mapping[str, str]) -> str | None:
    """Which proxy setting a client that makes its own HTTP client must refuse when it
    is made: ``"proxy"`` (``proxy=``, which is used alone when given), ``"environment"``
    (a proxy ``environment`` names for HTTP requests), or ``None``. A transport would
    otherwise fail every call, or quote the URL, password and all, in its error."""
    if proxy is not None:
        return None if well_formed(proxy) else "proxy"
    return None if EnvironmentProxies(environment).well_formed() else "environment"
