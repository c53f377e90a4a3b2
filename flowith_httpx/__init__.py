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

from flowith_proto import __version__ as __version__
from flowith_proto import extras
from flowith_proto.public import (
    APIError,
    AspectRatio,
    AuthenticationError,
    AuthSession,
    ChatMode,
    ClientStateError,
    ConnectionFailedError,
    ConversationBusyError,
    ConversationRecord,
    ConversationSession,
    ConvNovelEditor,
    CooperatorRecord,
    DiscussRecord,
    EdgeAuth,
    EventTooLargeError,
    FileRecord,
    FileUploadError,
    FlowithClientBase,
    FlowithError,
    FlowNode,
    FlowProject,
    GeneratedImage,
    GenerationError,
    GenerationOutput,
    ImageModel,
    ImageOutput,
    InsufficientCreditsError,
    MigrationInfo,
    ModelInfo,
    NotFoundError,
    OperationRun,
    OracleStreamRecord,
    PermissionDeniedError,
    PublicNotice,
    RateLimitError,
    ResponseDecodeError,
    SubscriptionUserOwn,
    TemplateRecord,
    TimeoutError,
    TokenCallback,
    UserCredits,
    UserProfile,
    UserUploadRecord,
    ValidationError,
    VideoModel,
    VideoOutput,
    set_log_level,
)

if TYPE_CHECKING:
    from flowith_httpx.client import FlowithClient

# Written out, not built from public.__all__: pyright counts only the names a package's
# own __all__ lists as exported (tests/test_signatures.py checks the two agree).
__all__ = [
    "APIError",
    "AspectRatio",
    "AuthSession",
    "AuthenticationError",
    "ChatMode",
    "ClientStateError",
    "ConnectionFailedError",
    "ConvNovelEditor",
    "ConversationBusyError",
    "ConversationRecord",
    "ConversationSession",
    "CooperatorRecord",
    "DiscussRecord",
    "EdgeAuth",
    "EventTooLargeError",
    "FileRecord",
    "FileUploadError",
    "FlowNode",
    "FlowProject",
    "FlowithClient",
    "FlowithClientBase",
    "FlowithError",
    "GeneratedImage",
    "GenerationError",
    "GenerationOutput",
    "ImageModel",
    "ImageOutput",
    "InsufficientCreditsError",
    "MigrationInfo",
    "ModelInfo",
    "NotFoundError",
    "OperationRun",
    "OracleStreamRecord",
    "PermissionDeniedError",
    "PublicNotice",
    "RateLimitError",
    "ResponseDecodeError",
    "SubscriptionUserOwn",
    "TemplateRecord",
    "TimeoutError",
    "TokenCallback",
    "UserCredits",
    "UserProfile",
    "UserUploadRecord",
    "ValidationError",
    "VideoModel",
    "VideoOutput",
    "set_log_level",
]


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
