"""The names every transport package re-exports, listed once."""

from flowith_proto.abc import ConversationSession
from flowith_proto.errors import (
    APIError,
    AuthenticationError,
    ConnectionFailedError,
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
from flowith_proto.logs import set_log_level
from flowith_proto.models import AspectRatio, ChatMode, GenerationOutput, ImageModel, VideoModel

__all__ = [
    "APIError",
    "AspectRatio",
    "AuthenticationError",
    "ChatMode",
    "ConnectionFailedError",
    "ConversationSession",
    "EventTooLargeError",
    "FileUploadError",
    "FlowithError",
    "GenerationError",
    "GenerationOutput",
    "ImageModel",
    "InsufficientCreditsError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ResponseDecodeError",
    "TimeoutError",
    "ValidationError",
    "VideoModel",
    "set_log_level",
]
