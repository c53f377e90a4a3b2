"""Code a user writes, checked by ``mypy --strict`` with the rest of the suite
(never run): the types a user leans on stay what the docs say, not ``Any``.

``--strict`` warns on returning ``Any`` from a function declared to return a
concrete type, so each function below fails the type check if its value's
type decays to ``Any``.
"""

from __future__ import annotations

import contextlib
from typing import Any

from flowith_httpx import EdgeAuth, FlowithClient, GenerationOutput, TokenCallback
from flowith_proto.generation import generate
from flowith_proto.replay import replay_operation


def replayed_value_is_the_operations_result() -> GenerationOutput:
    return replay_operation("one.jsonl", lambda state: generate(state, "hi")).value


async def listeners_can_be_closed_explicitly(client: FlowithClient) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    async with contextlib.aclosing(client.stream_user_stream()) as events:
        async for event in events:
            frames.append(event)
    async with contextlib.aclosing(client.iter_conversations()) as conversations:
        async for _ in conversations:
            break
    return frames


def settings_can_be_annotated(edge_auth: EdgeAuth, on_refresh: TokenCallback | None) -> None:
    FlowithClient("token", edge_auth=edge_auth, on_token_refresh=on_refresh)


def a_misspelt_name_is_a_type_error() -> object:
    # FlowithClient is imported lazily; a module __getattr__ visible to mypy made every
    # name of the package type-check (the ignore below would then go unused: an error).
    import flowith_httpx

    return flowith_httpx.FlowithClinet  # type: ignore[attr-defined]


async def an_upload_takes_a_path_or_data_but_not_both(client: FlowithClient) -> None:
    await client.upload_file("notes.txt")
    await client.upload_file(data=b"hello", filename="note.txt")
    # Each failed only when run ("pass exactly one of file_path or data").
    await client.upload_file()  # type: ignore[call-overload]
    await client.upload_file("notes.txt", data=b"hello")  # type: ignore[call-overload]
