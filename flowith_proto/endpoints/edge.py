"""The edge host (``edge.flowith.io``): generation, streams, uploads, account.

protocol.md 2.1 to 2.3. Every edge call carries the token in ``authorization``
(bare by default) and the browser headers; only calls with a body name a
content type (D26). Caller strings that land in a query are percent-encoded
to unreserved characters, so none can add a parameter (D13).
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flowith_proto.arguments import require_count, require_flag, require_text
from flowith_proto.endpoints._core import JSON, EndpointsCore, Position
from flowith_proto.errors import ValidationError
from flowith_proto.request import (
    FilePart,
    MultipartForm,
    Request,
    dump_json,
    quote_value,
    require_uuid,
)

__all__ = ["EdgeEndpoints", "guess_upload_meta", "upload_form"]

_TITLE_CONTENT_TYPE = "text/plain;charset=UTF-8"
_OCTET_STREAM = "application/octet-stream"
# RFC 2046 allows more, but these characters need no quoting in the
# Content-Type header and cannot end it.
_BOUNDARY = re.compile(r"[0-9A-Za-z'+_.-]{1,70}")


def guess_upload_meta(
    file_path: str | None, filename: str, mime_type: str | None, file_type: str | None
) -> tuple[str, str, str]:
    """The ``(filename, mime type, file type)`` an upload announces (protocol.md 2.1).

    An explicit ``filename`` wins, else the path's last component, else
    ``"file"``. The type is the extension without its dot: the path's suffix,
    else what follows the filename's last ``.``, else ``"bin"``. The MIME type
    is a guess from the path (else from the filename), else
    ``application/octet-stream``. Explicit ``mime_type``/``file_type`` win.
    A character UTF-8 cannot carry (a byte of a path's name the file system could
    not decode) is sent as ``?``.
    """
    name = filename or (Path(file_path).name if file_path else "") or "file"
    if not file_type:
        suffix = Path(file_path).suffix[1:] if file_path else ""
        after_dot = name.rpartition(".")[2] if "." in name else ""
        file_type = suffix or after_dot or "bin"
    if not mime_type:
        guessed = _guessed_type(file_path) if file_path else None
        mime_type = guessed or _guessed_type(name) or _OCTET_STREAM
    return _sendable(name), _sendable(mime_type), _sendable(file_type)


#: The type of a compressed file (``data.csv.gz``): its bytes are the compressor's,
#: whatever the name says is inside (``text/csv`` would be served for gzip bytes).
_COMPRESSED = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "br": "application/x-brotli",
    "compress": "application/x-compress",
}


def _guessed_type(name: str) -> str | None:
    content_type, encoding = mimetypes.guess_type(name)
    if encoding is not None:
        return _COMPRESSED.get(encoding, _OCTET_STREAM)
    return content_type


def _sendable(text: str) -> str:
    """``text`` with each lone surrogate, which UTF-8 cannot carry, made ``?``."""
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


def upload_form(
    *,
    boundary: str,
    filename: str,
    content_type: str,
    size: int,
    file_type: str,
    path: str | None = None,
    data: bytes | None = None,
) -> MultipartForm:
    """The ``/file/store`` body: field ``type``, then the file part ``file``.

    protocol.md names both fields without an order; the short ``type`` goes
    first so that the only part after the streamed file is the closing
    boundary. The file comes from ``path`` (streamed by the transport) or
    ``data``, exactly one of them; ``size`` must be its length in bytes.
    """
    if not isinstance(boundary, str) or not _BOUNDARY.fullmatch(boundary):
        raise ValidationError(
            f"boundary must be 1 to 70 of [0-9A-Za-z'+_.-], got {boundary!r}",
            status_code=None,
            details=[{"field": "boundary", "reason": "not a safe boundary"}],
        )
    if (path is None) == (data is None):
        raise ValidationError(
            "pass exactly one of path=... or data=...",
            status_code=None,
            details=[{"field": "path", "reason": "path and data are exclusive"}],
        )
    require_count(size, "size")
    if data is not None and not isinstance(data, bytes):
        raise ValidationError(
            f"data must be bytes, not {type(data).__name__}"
            + (" (encode the text first)" if isinstance(data, str) else ""),
            status_code=None,
            details=[{"field": "data", "reason": "not bytes"}],
        )
    if data is not None and size != len(data):
        raise ValidationError(
            f"size must be len(data) = {len(data)}, got {size}",
            status_code=None,
            details=[{"field": "size", "reason": "does not match data"}],
        )
    part = FilePart(
        name="file",
        filename=filename,
        content_type=require_text(content_type, "content_type"),
        size=size,
        path=path,
        data=data,
    )
    return MultipartForm(
        boundary=boundary,
        fields=(("type", require_text(file_type, "file_type")),),
        files=(part,),
    )


class EdgeEndpoints(EndpointsCore):
    """The builders of the edge host."""

    __slots__ = ()

    def _edge_get(self, path: str, query: Sequence[tuple[str, str]] = ()) -> Request:
        return Request("GET", self._edge(path, query), self.edge_headers(), idempotent=True)

    # -- generation (2.1) ----------------------------------------------------

    def start_completion(
        self,
        *,
        model: str,
        messages: Sequence[dict[str, Any]],
        node_id: str,
        conv_id: str,
    ) -> Request:
        """Ask the edge to generate into ``node_id``; the text arrives on the stream."""
        body = {
            "model": model,
            "messages": list(messages),
            "nodeId": require_uuid(node_id, "node_id"),
            "convId": require_uuid(conv_id, "conv_id"),
            "stream": True,
        }
        return Request(
            "POST",
            self._edge("/completion/async", [("mode", "general")]),
            self.edge_headers(JSON),
            dump_json(body),
        )

    def start_image(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        node_id: str,
        conv_id: str,
        aspect_ratio: str,
        image_size: str,
        agent: bool,
    ) -> Request:
        """Ask the edge to draw into the AI node ``node_id`` (keys in the web app's order)."""
        body = {
            "model": model,
            "nodeId": require_uuid(node_id, "node_id"),
            "convId": require_uuid(conv_id, "conv_id"),
            "messages": [dict(m) for m in messages],
            "aspect_ratio": aspect_ratio,
            "image_size": image_size,
            "agent": agent,
        }
        return Request(
            "POST", self._edge("/image_gen/async"), self.edge_headers(JSON), dump_json(body)
        )

    def start_video(
        self,
        *,
        node_id: str,
        model: str,
        prompt: str,
        image_url: str,
        aspect_ratio: str,
        audio: bool,
        resolution: str,
        conv_id: str,
        parent_node_id: str,
        position: Position,
    ) -> Request:
        """Ask the edge for a video; it creates node ``node_id`` under ``parent_node_id``
        itself (no AI row is inserted first, protocol.md 3.3)."""
        body = {
            "nodeId": require_uuid(node_id, "node_id"),
            "model": model,
            "prompt": prompt,
            "imageURL": image_url,
            "aspect_ratio": aspect_ratio,
            "audio": audio,
            "resolution": resolution,
            "convId": require_uuid(conv_id, "conv_id"),
            "parentNodeId": require_uuid(parent_node_id, "parent_node_id"),
            "position": position.as_json(),
        }
        return Request("POST", self._edge("/video/async"), self.edge_headers(JSON), dump_json(body))

    def conversation_title(self, messages: Sequence[Mapping[str, Any]]) -> Request:
        """A title for ``messages``. The web app labels this JSON body
        ``text/plain;charset=UTF-8`` (protocol.md 1.4), and so do we."""
        return Request(
            "POST",
            self._edge("/completion/conversation-title"),
            self.edge_headers(_TITLE_CONTENT_TYPE),
            dump_json({"messages": [dict(m) for m in messages]}),
        )

    def upload_file(self, form: MultipartForm) -> Request:
        """Store a file on the CDN. The body is the form itself, which the
        transport streams, so a large file never sits in memory (D16)."""
        return Request(
            "POST", self._edge("/file/store"), self.edge_headers(form.content_type), form
        )

    # -- streams (2.2) -------------------------------------------------------

    def user_stream(self) -> Request:
        """``/user_stream/stream``: every generation event of the user."""
        return Request(
            "GET",
            self._edge("/user_stream/stream", [("user_id", quote_value(self._user_id()))]),
            self.sse_headers(pragma=True),
            idempotent=True,
            stream=True,
        )

    def user_sse(self) -> Request:
        """``/user_stream/sse``: heartbeats and ``workflow_complete`` events."""
        return Request(
            "GET",
            self._edge("/user_stream/sse", [("user_id", quote_value(self._user_id()))]),
            self.sse_headers(pragma=False),
            idempotent=True,
            stream=True,
        )

    # -- account and misc (2.3) ----------------------------------------------

    def credits(self) -> Request:
        """The user's credit entries (a JSON array)."""
        return self._edge_get("/user/credits")

    def credit_type(self) -> Request:
        """``{"credit_type": ...}``."""
        return self._edge_get("/user/credit_type")

    def cooperators(self, conv_id: str) -> Request:
        """Who shares the conversation. The id is validated (D13)."""
        return self._edge_get("/cooperate/list", [("conv_id", require_uuid(conv_id, "conv_id"))])

    def models(self, *, logo: bool = True, desc: bool = True) -> Request:
        """The model catalogue; the flags go out as ``1``/``0`` as the web app sends them."""
        flags = [(n, str(int(require_flag(f, n)))) for n, f in (("logo", logo), ("desc", desc))]
        return self._edge_get("/models", flags)

    def templates(self, *, template_type: str | None = None, page_size: int = 1000) -> Request:
        """Prompt templates; ``template_type`` is percent-encoded (D13), and an
        empty one means every type, as in the web app (no ``type=`` at all)."""
        query = [("page_size", require_count(page_size, "page_size", minimum=1))]
        if template_type:
            query.append(("type", quote_value(require_text(template_type, "template_type"))))
        return self._edge_get("/templates", query)

    def discord_invite(self) -> Request:
        """``{"link": ...}``."""
        return self._edge_get("/discord/invite-link")

    def featurebase_status(self) -> Request:
        return self._edge_get("/featurebase/status")

    def daily_rewards_status(self) -> Request:
        return self._edge_get("/mkt/daily-rewards/status")

    def claim_daily_reward(self) -> Request:
        """Claim today's reward: a POST with the JSON body ``{}``, never retried blindly."""
        return Request(
            "POST", self._edge("/mkt/daily-rewards/claim"), self.edge_headers(JSON), dump_json({})
        )

    def campaign_status(self, model_id: str) -> Request:
        """Campaign state for a model. Model ids contain ``/``; the old client
        sent them raw (D13), here every reserved character is encoded."""
        model = quote_value(require_text(model_id, "model_id"))
        return self._edge_get("/user/campaigns/effective-status", [("model_id", model)])

    def banana_campaign(self) -> Request:
        return self._edge_get("/mkt/banana-2025/check")

    def new_version_access(self) -> Request:
        return self._edge_get("/invitation/access-new-version")

    def enterprise_dashboard(self) -> Request:
        return self._edge_get("/enterprise/dashboard/me")
