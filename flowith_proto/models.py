"""The typed results a caller receives, with the old client's field names.

Every record is frozen and built from immutable values: sequences are tuples,
and the mappings (``metadata``, ``FlowNode.data``...) are shallow copies that
nothing in the library mutates. ``metadata`` is the raw row or event. Text
fields the server may fill with a JSON object instead of text (``workflow``,
``content``, ``preview``, ``value``...) stay ``str``: :mod:`flowith_proto.convert`
stores the object's compact JSON text there, so nothing is lost and the type
never changes under the caller. Records take no weak references
(``weakref_slot=False``): their slots are filled in bulk when a listing is read
(:func:`flowith_proto.convert._unfrozen_twin`), about a third faster so.
"""

from __future__ import annotations

import copy
import enum
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs

from flowith_proto.errors import FlowithError

__all__ = [
    "AspectRatio",
    "AuthSession",
    "ChatMode",
    "ConvNovelEditor",
    "ConversationRecord",
    "CooperatorRecord",
    "DiscussRecord",
    "FileRecord",
    "FlowNode",
    "FlowProject",
    "GeneratedImage",
    "GenerationOutput",
    "ImageModel",
    "ImageOutput",
    "MigrationInfo",
    "ModelInfo",
    "OracleStreamRecord",
    "PublicNotice",
    "SubscriptionUserOwn",
    "TemplateRecord",
    "UserCredits",
    "UserProfile",
    "UserUploadRecord",
    "VideoModel",
    "VideoOutput",
]


def _frozen_dict(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return dict(value) if value is not None else {}


def _metadata_field() -> Any:
    """The raw row or event, copied so a caller's later edits cannot reach it."""
    return _mapping_field(repr=False)


def _mapping_field(*, repr: bool = True) -> Any:
    """A mapping compared by equality but left out of the hash (a dict has none), so
    records can go in sets and be dict keys; equal records still hash alike."""
    return attrs.field(factory=dict, converter=_frozen_dict, repr=repr, hash=False)


@attrs.frozen(weakref_slot=False)
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
    metadata: Mapping[str, Any] = _metadata_field()
    reasoning: str = ""
    reasoning_delta: str = ""

    def __str__(self) -> str:
        return self.text


def _str_tuple(value: Iterable[str] | None) -> tuple[str, ...]:
    return tuple(value) if value is not None else ()


def _image_tuple(value: Iterable[GeneratedImage] | None) -> tuple[GeneratedImage, ...]:
    return tuple(value) if value is not None else ()


def _as_text(value: Any) -> str:
    """A node's ``data`` value as text: JSON text for objects, ``""`` for none."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return str(value)


# --- generation results -------------------------------------------------------------------------


class Downloader(Protocol):
    """What ``save()`` needs: the client's :meth:`download`."""

    async def download(
        self,
        url: str,
        path: str | os.PathLike[str] = ".",
        *,
        filename: str | None = None,
        overwrite: bool = False,
        timeout: float | None = None,
        default_name: str = "download",
    ) -> Path: ...


async def _save(
    downloader: Downloader | None,
    url: str,
    path: str | os.PathLike[str],
    filename: str | None,
    overwrite: bool,
    timeout: float | None,
    default_name: str,
    verbose: bool,
) -> Path:
    if downloader is None:
        raise FlowithError(
            "this result was not returned by a client; download it with client.download(url)"
        )
    if not url:
        raise FlowithError("there is no URL to download")
    saved = await downloader.download(
        url,
        path,
        filename=filename,
        overwrite=overwrite,
        timeout=timeout,
        default_name=default_name,
    )
    if verbose:
        print(f"Saved: {saved}")
    return saved


def _value_fields(result: Any) -> dict[str, Any]:
    """A media result's fields but the client that made it (its ``_downloader``: not
    part of its value, never compared, shown or matched)."""
    return attrs.asdict(result, recurse=False, filter=lambda field, _: field.name != "_downloader")


def _reduce_without_client(self: Any) -> tuple[Any, ...]:
    """Pickled without the client that made it: a live client cannot travel to
    another process, and an unpickled result's ``save()`` says so."""
    return (_rebuilt, (type(self), _value_fields(self)))


def _rebuilt(cls: type[Any], fields: dict[str, Any]) -> Any:
    return cls(**fields)


def _copy_keeping_client(self: Any) -> Any:
    """A frozen result is its own copy (a copy by pickling would drop its client)."""
    return self


def _deepcopy_keeping_client(self: Any, memo: dict[int, Any]) -> Any:
    """A deep copy of the value that still downloads through the same client."""
    fields = copy.deepcopy(_value_fields(self), memo)
    return type(self)(**fields, downloader=self._downloader)


@attrs.frozen(weakref_slot=False)
class GeneratedImage:
    """One generated image; ``await image.save(folder)`` downloads it."""

    url: str = ""
    model: str = ""
    #: The client that produced it: downloads go through its transport,
    #: proxy and timeouts (the old client used a bare session: D16).
    _downloader: Downloader | None = attrs.field(
        default=None, eq=False, repr=False, alias="downloader", kw_only=True
    )

    __reduce__ = _reduce_without_client
    __copy__ = _copy_keeping_client
    __deepcopy__ = _deepcopy_keeping_client

    async def save(
        self,
        path: str | os.PathLike[str] = ".",
        filename: str | None = None,
        verbose: bool = False,
        *,
        overwrite: bool = False,
        timeout: float | None = None,
    ) -> Path:
        """Download the image into the folder ``path``; returns the file's
        absolute path (printed too, with ``verbose``, as the original client did).

        Streamed to disk, written under a temporary name and renamed when
        complete; never replaces a file unless ``overwrite``: a taken name from
        the URL (its last segment, else ``image.jpg``) gives way to a free
        ``image-1.png``..., a taken ``filename`` is :class:`FileExistsError`.
        The name can never leave ``path`` (D17).
        """
        return await _save(
            self._downloader, self.url, path, filename, overwrite, timeout, "image.jpg", verbose
        )


@attrs.frozen(weakref_slot=False)
class ImageOutput:
    """The result of an image generation; ``image`` is the first image, if any."""

    images: tuple[GeneratedImage, ...] = attrs.field(factory=tuple, converter=_image_tuple)
    model: str = ""
    node_id: str = ""
    conv_id: str = ""
    metadata: Mapping[str, Any] = _metadata_field()

    @property
    def image(self) -> GeneratedImage | None:
        """The first image; ``None`` only for an output built without one
        (``generate_image`` raises :class:`GenerationError` for a job that ended
        without an image)."""
        return self.images[0] if self.images else None


@attrs.frozen(weakref_slot=False)
class VideoOutput:
    """The result of a video generation."""

    video_url: str = ""
    model: str = ""
    node_id: str = ""
    conv_id: str = ""
    metadata: Mapping[str, Any] = _metadata_field()
    _downloader: Downloader | None = attrs.field(
        default=None, eq=False, repr=False, alias="downloader", kw_only=True
    )

    __reduce__ = _reduce_without_client
    __copy__ = _copy_keeping_client
    __deepcopy__ = _deepcopy_keeping_client

    async def save(
        self,
        path: str | os.PathLike[str] = ".",
        filename: str | None = None,
        verbose: bool = False,
        *,
        overwrite: bool = False,
        timeout: float | None = None,
    ) -> Path:
        """Download the video into the folder ``path`` (as :meth:`GeneratedImage.save`;
        default name ``video.mp4``)."""
        return await _save(
            self._downloader,
            self.video_url,
            path,
            filename,
            overwrite,
            timeout,
            "video.mp4",
            verbose,
        )


@attrs.frozen(weakref_slot=False)
class FileRecord:
    """An uploaded file: its CDN ``url`` and the ``type`` field that was sent."""

    url: str = ""
    file_type: str = ""
    metadata: Mapping[str, Any] = _metadata_field()


# --- PostgREST rows ------------------------------------------------------------------------------


@attrs.frozen(weakref_slot=False)
class ConversationRecord:
    """A ``conversation`` row. ``preview`` alone may be ``None`` (no preview yet)."""

    conv_id: str = ""
    title: str = ""
    user_id: str = ""
    is_absolute_mode: bool = True
    preview: str | None = None
    metadata: Mapping[str, Any] = _metadata_field()


@attrs.frozen(weakref_slot=False)
class FlowNode:
    """A ``flow_node`` row: one box of the canvas (``node_type`` "1" user, "2" AI)."""

    node_id: str = ""
    conv_id: str = ""
    node_type: str = ""
    p_id: str = ""
    c_ids: tuple[str, ...] = attrs.field(factory=tuple, converter=_str_tuple)
    data: Mapping[str, Any] = _mapping_field()
    position: Mapping[str, Any] = _mapping_field()
    metadata: Mapping[str, Any] = _metadata_field()

    @property
    def text(self) -> str:
        """``data["value"]`` as text (JSON text if the node stores an object)."""
        return _as_text(self.data.get("value"))

    @property
    def model(self) -> str:
        """``data["model"]``, or ``""`` for a node without one (user nodes)."""
        return _as_text(self.data.get("model"))


@attrs.frozen(weakref_slot=False)
class UserCredits:
    """One entry of ``/user/credits``; the balance is the sum of ``remain_quota``."""

    remain_quota: float = 0.0
    init_quota: float = 0.0
    sub_type: str = ""
    from_date: str = ""
    to_date: str = ""
    metadata: Mapping[str, Any] = _metadata_field()


@attrs.frozen(weakref_slot=False)
class ModelInfo:
    """One entry of the ``/models`` catalogue, keyed there by ``model_id``."""

    model_id: str = ""
    title: str = ""
    media: str = ""
    tier: str = ""
    metadata: Mapping[str, Any] = _metadata_field()


@attrs.frozen(weakref_slot=False)
class TemplateRecord:
    """A prompt template from ``/templates``."""

    template_id: str = ""
    name: str = ""
    category: str = ""
    template_type: str = ""
    prompt: str = ""
    model: str = ""
    cover_url: str = ""
    metadata: Mapping[str, Any] = _metadata_field()


@attrs.frozen(weakref_slot=False)
class CooperatorRecord:
    """A collaborator of a conversation (``role`` 2 unless the server says otherwise)."""

    user_id: str = ""
    role: int = 2
    user_name: str = ""
    user_avatar: str = ""
    metadata: Mapping[str, Any] = _metadata_field()


@attrs.frozen(weakref_slot=False)
class UserProfile:
    """A ``user_profile`` row."""

    user_id: str = ""
    language: str = ""
    metadata: Mapping[str, Any] = _metadata_field()


@attrs.frozen(weakref_slot=False)
class UserUploadRecord:
    """A ``user_upload_records`` row: a file the user uploaded."""

    record_id: str = ""
    user_id: str = ""
    conv_id: str = ""
    value: str = ""
    name: str = ""
    file_type: str = ""
    created_at: str = ""
    metadata: Mapping[str, Any] = _metadata_field()


@attrs.frozen(weakref_slot=False)
class SubscriptionUserOwn:
    """A ``subscription_user_own`` grant; ``subscription_type`` is the embedded
    ``{id, quota}`` row."""

    record_id: str = ""
    months: int = 0
    from_date: str = ""
    to_date: str = ""
    remain_quota: float = 0.0
    subscription_type: Mapping[str, Any] = _mapping_field()
    metadata: Mapping[str, Any] = _metadata_field()


@attrs.frozen(weakref_slot=False)
class PublicNotice:
    """A ``public_notice`` row."""

    notice_id: str = ""
    title: str = ""
    content: str = ""
    metadata: Mapping[str, Any] = _metadata_field()


@attrs.frozen(weakref_slot=False)
class FlowProject:
    """A ``flow_project`` row (a folder of conversations)."""

    project_id: str = ""
    title: str = ""
    updated_at: str = ""
    metadata: Mapping[str, Any] = _metadata_field()


@attrs.frozen(weakref_slot=False)
class ConvNovelEditor:
    """A ``conv_novel_editor`` row; ``content`` is JSON text if the server stores an object."""

    conv_id: str = ""
    content: str = ""
    metadata: Mapping[str, Any] = _metadata_field()


@attrs.frozen(weakref_slot=False)
class DiscussRecord:
    """A ``discuss`` row: a comment on a conversation."""

    discuss_id: str = ""
    conv_id: str = ""
    user_id: str = ""
    content: str = ""
    created_at: str = ""
    metadata: Mapping[str, Any] = _metadata_field()


@attrs.frozen(weakref_slot=False)
class OracleStreamRecord:
    """An ``oracle_stream`` row; ``workflow`` is JSON text if the server sends an object."""

    record_id: str = ""
    requirement: str = ""
    workflow: str = ""
    no_need_replan: bool = False
    is_stop: bool = False
    is_public: bool = False
    user_confirm: bool = False
    is_delete: bool = False
    metadata: Mapping[str, Any] = _metadata_field()


@attrs.frozen(weakref_slot=False)
class MigrationInfo:
    """The ``migration`` row: the web app's schema version."""

    version: str = ""
    metadata: Mapping[str, Any] = _metadata_field()


# --- auth ----------------------------------------------------------------------------------------


def _masked(token: str) -> str:
    return "'***'" if token else "''"


@attrs.frozen(repr=False, weakref_slot=False)
class AuthSession:
    """A GoTrue token answer (``/token?grant_type=...``).

    ``repr()`` and ``str()`` mask both tokens and leave ``metadata`` (which
    holds them too) out, so a session can be logged or shown in a traceback
    without leaking credentials.
    """

    access_token: str = ""
    refresh_token: str = ""
    token_type: str = ""
    expires_in: int | None = None
    expires_at: float | None = None
    user: Mapping[str, Any] = _mapping_field()
    metadata: Mapping[str, Any] = _metadata_field()

    @property
    def user_id(self) -> str:
        """The ``user.id`` of the session (the JWT ``sub``), or ``""``."""
        return _as_text(self.user.get("id"))

    def __repr__(self) -> str:
        return (
            f"AuthSession(access_token={_masked(self.access_token)}, "
            f"refresh_token={_masked(self.refresh_token)}, token_type={self.token_type!r}, "
            f"expires_in={self.expires_in!r}, expires_at={self.expires_at!r}, "
            f"user_id={self.user_id!r})"
        )

    __str__ = __repr__


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
