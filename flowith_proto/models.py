"""The typed results a caller receives, with the old client's field names."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["AspectRatio", "ChatMode", "GenerationOutput", "ImageModel", "VideoModel"]


def _frozen_dict(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return dict(value) if value is not None else {}


@attrs.frozen
class GenerationOutput:
    """One step of a text generation, or its final result.

    While streaming, ``text_delta`` / ``reasoning_delta`` hold what is new in
    this step and ``text`` / ``reasoning`` everything so far; the final output
    carries the server's authoritative text (stripped of surrounding
    whitespace) and, when streaming, whatever part of it was not yet delivered
    as its last delta. ``str(output)`` is ``output.text``.
    """

    text: str = ""
    text_delta: str = ""
    node_id: str = ""
    conv_id: str = ""
    model: str = ""
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_dict, repr=False)
    reasoning: str = ""
    reasoning_delta: str = ""

    def __str__(self) -> str:
        return self.text


class ChatMode(str, enum.Enum):
    """The generation modes of the web app."""

    GENERAL = "general"
    IMAGE = "image_generation"
    VIDEO = "video_generation"


class ImageModel(str, enum.Enum):
    """Image models known to the web app; any other model id string works too."""

    GEMINI_3_1_FLASH_IMAGE = "gemini-3.1-flash-image-preview"
    GEMINI_3_PRO_IMAGE = "gemini-3-pro-image-preview"
    GEMINI_2_5_FLASH_IMAGE = "gemini-2.5-flash-image"
    GPT_IMAGE_2 = "gpt-image-2"
    GPT_IMAGE_1_5 = "gpt-image-1.5"
    GPT_IMAGE_1 = "gpt-image-1"
    DEFAULT = "gemini-3.1-flash-image"


class VideoModel(str, enum.Enum):
    """Video models known to the web app; any other model id string works too."""

    SEEDANCE_2_FAST = "seedance-2.0-fast"
    KLING = "kling-video/v2.6/pro/text-to-video"
    KLING_IMG = "kling-video/v2.6/pro/image-to-video"
    DEFAULT = "seedance-2.0-fast"  # noqa: PIE796 (an alias of SEEDANCE_2_FAST, as in the seed)


class AspectRatio(str, enum.Enum):
    """Common aspect ratios; other ratios (``"3:2"``, ``"21:9"``...) pass as strings."""

    SQUARE = "1:1"
    LANDSCAPE = "16:9"
    PORTRAIT = "9:16"
    CLASSIC = "4:3"
