"""Swapping transports changes one import: the public surfaces are identical."""

from __future__ import annotations

import inspect

import flowith_aiohttp
import flowith_httpx
from flowith_proto.abc import ConversationSession, FlowithClientBase


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, callable)
        if not name.startswith("_")
    }


def test_every_public_method_has_the_same_signature_on_both_transports() -> None:
    httpx_methods = public_methods(flowith_httpx.FlowithClient)
    aiohttp_methods = public_methods(flowith_aiohttp.FlowithClient)
    assert httpx_methods == aiohttp_methods
    assert {"generate", "generate_stream", "start_conversation", "delete_conversation"} <= set(
        httpx_methods
    )


def test_constructors_differ_only_in_the_type_of_the_users_own_client() -> None:
    ours = inspect.signature(flowith_httpx.FlowithClient.__init__).parameters
    theirs = inspect.signature(flowith_aiohttp.FlowithClient.__init__).parameters
    assert list(ours) == list(theirs)
    for name in ours:
        left, right = ours[name], theirs[name]
        assert (left.kind, left.default) == (right.kind, right.default), name
        if name != "http_client":
            assert left.annotation == right.annotation, name
    assert list(ours)[1:] == [
        "token",
        "user_id",
        "refresh_token",
        "edge_url",
        "supabase_url",
        "supabase_key",
        "timeout",
        "result_timeout",
        "poll_interval",
        "max_retries",
        "on_token_refresh",
        "edge_auth",
        "record_to",
        "proxy",
        "http_client",
    ]


def test_both_packages_export_the_same_names() -> None:
    assert sorted(flowith_httpx.__all__) == sorted(flowith_aiohttp.__all__)
    for name in flowith_httpx.__all__:
        if name != "FlowithClient":
            assert getattr(flowith_httpx, name) is getattr(flowith_aiohttp, name), name


def test_clients_are_the_shared_base() -> None:
    assert issubclass(flowith_httpx.FlowithClient, FlowithClientBase)
    assert issubclass(flowith_aiohttp.FlowithClient, FlowithClientBase)
    assert flowith_httpx.ConversationSession is ConversationSession
    assert public_methods(ConversationSession).keys() >= {"send", "send_stream", "delete"}
