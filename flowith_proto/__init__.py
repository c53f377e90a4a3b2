"""flowith_proto: the sans-I/O core of the Flowith client.

It builds every request, decodes server-sent events, routes them by node and
decides every retry and fallback, but never opens a socket, sleeps or reads a
clock: the transports (``flowith_httpx``, ``flowith_aiohttp``) do that.
"""

import importlib.metadata

from flowith_proto.errors import (
    APIError,
    AuthenticationError,
    ClientStateError,
    ConnectionFailedError,
    ConversationBusyError,
    EventTooLargeError,
    FileUploadError,
    FlowithError,
    GenerationError,
    InsufficientCreditsError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResponseDecodeError,
    TimeoutError,
    ValidationError,
)

__all__ = [
    "APIError",
    "AuthenticationError",
    "ClientStateError",
    "ConnectionFailedError",
    "ConversationBusyError",
    "EventTooLargeError",
    "FileUploadError",
    "FlowithError",
    "GenerationError",
    "InsufficientCreditsError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ResponseDecodeError",
    "TimeoutError",
    "ValidationError",
]

try:
    #: The installed distribution's version (``flowith``), as ``flowith_webapi.__version__``.
    __version__ = importlib.metadata.version("flowith")
except importlib.metadata.PackageNotFoundError:  # run from a source tree never installed
    __version__ = "0+unknown"
