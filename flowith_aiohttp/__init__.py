"""flowith_aiohttp: the Flowith client on aiohttp (asyncio).

    from flowith_aiohttp import FlowithClient

    async with FlowithClient(token) as client:
        reply = await client.generate("Hello!")

``flowith_httpx`` offers the same API on httpx (asyncio and trio): only the import changes.
"""

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

try:
    from flowith_aiohttp.client import FlowithClient
except ModuleNotFoundError as exc:
    extras.explain(exc, "flowith_aiohttp", "aiohttp")
    raise

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
