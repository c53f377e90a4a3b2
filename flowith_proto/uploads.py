"""Uploading a file to ``/file/store`` (protocol.md 2.1) as a sans-I/O operation."""

from __future__ import annotations

from typing import Any

from flowith_proto.arguments import require_option
from flowith_proto.calls import call
from flowith_proto.config import check_seconds
from flowith_proto.effects import NewId, Operation
from flowith_proto.endpoints import guess_upload_meta, upload_form
from flowith_proto.errors import (
    APIError,
    AuthenticationError,
    FileUploadError,
    InsufficientCreditsError,
    RateLimitError,
    ValidationError,
    rewrap,
)
from flowith_proto.files import url_problem
from flowith_proto.models import FileRecord
from flowith_proto.state import ClientState

__all__ = ["require_one_source", "upload"]

# Failures that mean the same for an upload as for any call keep their type
# (the old client hid them all behind FileUploadError: D21).
_KEEP = (AuthenticationError, RateLimitError, InsufficientCreditsError)


def require_one_source(file_path: str | None, data: bytes | None) -> None:
    """Refuse an upload given both a path and data, or neither: checked before the
    driver looks at the disk, so a missing path is not blamed first."""
    if (file_path is None) == (data is None):
        raise ValidationError("pass exactly one of file_path or data", status_code=None)


def upload(
    state: ClientState,
    *,
    size: int,
    file_path: str | None = None,
    data: bytes | None = None,
    filename: str = "file",
    mime_type: str | None = None,
    file_type: str | None = None,
    timeout: float | None = None,
) -> Operation[FileRecord]:
    """Send one file as ``multipart/form-data`` and return its CDN record.

    ``size`` is the file's length (the driver reads it from the disk); the
    transport streams the file, so it is never held in memory whole.
    """
    require_one_source(file_path, data)
    check_seconds("timeout", timeout)
    filename = require_option(filename, "filename")
    if mime_type is not None:
        mime_type = require_option(mime_type, "mime_type")
    if file_type is not None:
        file_type = require_option(file_type, "file_type")
    # The signature's default name "file" is for in-memory data; a file on
    # disk keeps its own name unless another one is asked for.
    hint = "" if file_path is not None and filename == "file" else filename
    name, mime, kind = guess_upload_meta(file_path, hint, mime_type, file_type)
    boundary: str = yield NewId()
    form = upload_form(
        boundary="----flowith" + boundary.replace("-", ""),
        filename=name,
        content_type=mime,
        size=size,
        file_type=kind,
        path=file_path,
        data=data,
    )
    try:
        response = yield from call(state, lambda e: e.upload_file(form), timeout=timeout)
    except _KEEP:
        raise
    except APIError as exc:
        raise rewrap(exc, FileUploadError, f"upload failed: {exc}") from exc
    body: Any = response.json()
    url = body.get("url") if isinstance(body, dict) else None
    if not isinstance(url, str) or not url:
        raise FileUploadError(
            "the upload answer carries no 'url'", status_code=response.status, body=body
        )
    # The record's URL is what a generation is handed next: text that is none would
    # only fail there, far from its cause.
    problem = url_problem(url)
    if problem is not None:
        raise FileUploadError(
            f"the upload answer's 'url' {url!r} is no usable URL: {problem}",
            status_code=response.status,
            body=body,
        )
    return FileRecord(url=url, file_type=kind, metadata=body)
