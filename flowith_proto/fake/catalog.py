"""Static content of the fake: the model catalogue, templates, and generated media.

Nothing here depends on a request; the model serves it as the real edge
serves its catalogue (``/models``, ``/templates``). The media makers return
small but valid files, so a test that saves a generated image gets a real PNG.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from typing import Any

__all__ = [
    "IMAGE_MODELS",
    "MODELS",
    "TEMPLATES",
    "TEXT_MODELS",
    "VIDEO_MODELS",
    "fake_mp4",
    "fake_png",
]

_LOGO = "https://r2-bucket.flowith.net/logos/{}.svg"


def _model(
    title: str, media: str, tier: str, provider: str, desc: str, **extra: Any
) -> dict[str, Any]:
    return {
        "title": title,
        "media": media,
        "tier": tier,
        "provider": provider,
        "logo": _LOGO.format(provider),
        "desc": desc,
        **extra,
    }


#: Text models, by id (``media`` ``"text"``).
TEXT_MODELS: dict[str, dict[str, Any]] = {
    "gpt-4.1-nano": _model(
        "GPT-4.1 nano",
        "text",
        "free",
        "openai",
        "Fast and light for everyday chat.",
        context_window=1_047_576,
    ),
    "gpt-4.1": _model(
        "GPT-4.1",
        "text",
        "pro",
        "openai",
        "Strong general model with a long context.",
        context_window=1_047_576,
    ),
    "gpt-5": _model(
        "GPT-5",
        "text",
        "pro",
        "openai",
        "OpenAI's flagship reasoning model.",
        context_window=400_000,
        reasoning=True,
    ),
    "deepseek-r1": _model(
        "DeepSeek R1",
        "text",
        "free",
        "deepseek",
        "Open reasoning model; thinks in <think> tags.",
        context_window=128_000,
        reasoning=True,
    ),
    "deepseek-v4-flash": _model(
        "DeepSeek V4 Flash",
        "text",
        "free",
        "deepseek",
        "Quick answers at a low cost.",
        context_window=128_000,
    ),
    "gemini-3.1-pro-preview": _model(
        "Gemini 3.1 Pro (preview)",
        "text",
        "pro",
        "google",
        "Google's most capable model.",
        context_window=1_048_576,
        reasoning=True,
    ),
    "claude-sonnet-4.5": _model(
        "Claude Sonnet 4.5",
        "text",
        "pro",
        "anthropic",
        "Careful writing and coding.",
        context_window=200_000,
        reasoning=True,
    ),
}

#: Image models (protocol.md 5, ``ImageModel``), by id.
IMAGE_MODELS: dict[str, dict[str, Any]] = {
    "gemini-3.1-flash-image": _model(
        "Nano Banana 2",
        "image",
        "free",
        "google",
        "The web app's default image model.",
    ),
    "gemini-3.1-flash-image-preview": _model(
        "Nano Banana 2 (preview)",
        "image",
        "free",
        "google",
        "Fast image generation and edits.",
    ),
    "gemini-3-pro-image-preview": _model(
        "Nano Banana Pro",
        "image",
        "pro",
        "google",
        "High-fidelity images with legible text.",
    ),
    "gemini-2.5-flash-image": _model(
        "Nano Banana",
        "image",
        "free",
        "google",
        "The original Gemini image model.",
    ),
    "gpt-image-2": _model(
        "GPT Image 2",
        "image",
        "pro",
        "openai",
        "OpenAI's newest image model.",
    ),
    "gpt-image-1.5": _model(
        "GPT Image 1.5",
        "image",
        "pro",
        "openai",
        "Precise edits and instruction following.",
    ),
    "gpt-image-1": _model(
        "GPT Image 1",
        "image",
        "free",
        "openai",
        "OpenAI's first native image model.",
    ),
}

#: Video models (protocol.md 5, ``VideoModel``, and 3.3), by id.
VIDEO_MODELS: dict[str, dict[str, Any]] = {
    "seedance-2.0-fast": _model(
        "Seedance 2.0 Fast",
        "video",
        "pro",
        "bytedance",
        "Short clips with sound, quickly.",
    ),
    "kling-video/v2.6/pro/text-to-video": _model(
        "Kling 2.6 Pro (text to video)",
        "video",
        "pro",
        "kling",
        "Cinematic clips from text.",
    ),
    "kling-video/v2.6/pro/image-to-video": _model(
        "Kling 2.6 Pro (image to video)",
        "video",
        "pro",
        "kling",
        "Animates a still image.",
    ),
    "veo-3.1-fast-generate": _model(
        "Veo 3.1 Fast",
        "video",
        "ultimate",
        "google",
        "Google's video model with audio.",
    ),
}

#: ``GET /models``: every model by id.
MODELS: dict[str, dict[str, Any]] = {**TEXT_MODELS, **IMAGE_MODELS, **VIDEO_MODELS}


def _template(
    number: int, name: str, category: str, kind: str, prompt: str, model: str
) -> dict[str, Any]:
    return {
        "id": f"tpl_{number:04d}",
        "name": name,
        "category": category,
        "type": kind,
        "prompt": prompt,
        "model": model,
        "cover_url": f"https://r2-bucket.flowith.net/templates/tpl_{number:04d}.webp",
        "created_at": f"2026-0{1 + number % 5}-1{number % 10}T09:00:00.000000+00:00",
    }


#: ``GET /templates``: the template gallery (``type`` is ``text``, ``image`` or ``video``).
TEMPLATES: list[dict[str, Any]] = [
    _template(1, "Weekly report", "Work", "text", "Write a weekly report about: ", "gpt-4.1"),
    _template(2, "Explain like I'm five", "Learning", "text", "Explain simply: ", "gpt-4.1-nano"),
    _template(3, "Code reviewer", "Coding", "text", "Review this code: ", "claude-sonnet-4.5"),
    _template(4, "Product shot", "Design", "image", "A studio photo of ", "gemini-3.1-flash-image"),
    _template(5, "Pixel art", "Design", "image", "Pixel art of ", "gpt-image-1"),
    _template(6, "Logo sketch", "Branding", "image", "A minimal logo for ", "gpt-image-2"),
    _template(
        7, "Drone flyover", "Film", "video", "A drone shot flying over ", "seedance-2.0-fast"
    ),
    _template(
        8,
        "Animate a photo",
        "Film",
        "video",
        "Bring this photo to life: ",
        "kling-video/v2.6/pro/image-to-video",
    ),
]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def fake_png(seed: str, *, size: int = 16) -> bytes:
    """A valid ``size`` x ``size`` RGB PNG in one colour picked by ``seed``."""
    red, green, blue = hashlib.sha256(seed.encode("utf-8", "surrogatepass")).digest()[:3]
    row = b"\x00" + bytes((red, green, blue)) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(row * size))
        + _png_chunk(b"IEND", b"")
    )


def fake_mp4(seed: str) -> bytes:
    """A tiny ISO media file: an ``ftyp`` box and an ``mdat`` box of seeded bytes."""
    ftyp = b"isom" + struct.pack(">I", 0x200) + b"isomiso2avc1mp41"
    payload = hashlib.sha256(seed.encode("utf-8", "surrogatepass")).digest() * 8
    return (
        struct.pack(">I", 8 + len(ftyp))
        + b"ftyp"
        + ftyp
        + struct.pack(">I", 8 + len(payload))
        + b"mdat"
        + payload
    )
