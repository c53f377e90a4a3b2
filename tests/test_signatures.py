"""Swapping transports changes one import: the public surfaces are identical."""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import subprocess
import sys
import textwrap
import typing
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import flowith_aiohttp
import flowith_httpx
from flowith_proto import public
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
        "stream_idle_timeout",
        "proxy",
        "http_client",
    ]


def test_both_packages_export_the_same_names() -> None:
    assert sorted(flowith_httpx.__all__) == sorted(flowith_aiohttp.__all__)
    assert sorted(flowith_httpx.__all__) == sorted(["FlowithClient", *public.__all__])
    for name in flowith_httpx.__all__:
        if name != "FlowithClient":
            assert getattr(flowith_httpx, name) is getattr(flowith_aiohttp, name), name


@pytest.mark.parametrize("package", [flowith_httpx, flowith_aiohttp])
def test_each_package_lists_its_exports_as_pyright_reads_them(package: ModuleType) -> None:
    """pyright counts as exported only the names a package's own __all__ lists
    literally: built with ``__all__ += public.__all__``, 30 documented names (every
    model and enum) were "not exported" errors under pyright and Pylance."""
    assert package.__file__ is not None
    tree = ast.parse(Path(package.__file__).read_text())
    (listed,) = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and [getattr(t, "id", None) for t in node.targets] == ["__all__"]
    ]
    assert isinstance(listed, ast.List)
    assert [ast.literal_eval(item) for item in listed.elts] == package.__all__
    assert not any(
        isinstance(node, ast.AugAssign) and getattr(node.target, "id", None) == "__all__"
        for node in ast.walk(tree)
    )


@pytest.mark.parametrize("package", [flowith_httpx, flowith_aiohttp])
def test_each_package_has_the_installed_version(package: ModuleType) -> None:
    """``flowith_webapi.__version__`` was gone: code that logged or checked it broke."""
    assert package.__version__ == importlib.metadata.version("flowith")


#: What ``flowith_webapi`` 1.0.1 exported at top level: the names its README promises.
ORIGINAL_NAMES = (
    "FlowithClient", "ConversationSession", "ImageModel", "VideoModel", "ChatMode",
    "AspectRatio", "GenerationOutput", "ImageOutput", "VideoOutput", "GeneratedImage",
    "FileRecord", "ConversationRecord", "FlowNode", "UserCredits", "ModelInfo",
    "TemplateRecord", "CooperatorRecord", "UserProfile", "UserUploadRecord",
    "SubscriptionUserOwn", "PublicNotice", "FlowProject", "ConvNovelEditor",
    "DiscussRecord", "OracleStreamRecord", "MigrationInfo", "FlowithError", "APIError",
    "AuthenticationError", "RateLimitError", "ValidationError", "TimeoutError",
    "FileUploadError", "set_log_level",
)  # fmt: skip


def test_every_name_the_original_client_exported_is_importable_from_both() -> None:
    for package in (flowith_httpx, flowith_aiohttp):
        missing = [name for name in ORIGINAL_NAMES if name not in package.__all__]
        assert missing == [], package.__name__
        for name in ORIGINAL_NAMES:
            assert getattr(package, name) is not None


def _classes_in(hint: object) -> Iterator[type]:
    if isinstance(hint, type) and not typing.get_args(hint):
        yield hint
    for argument in typing.get_args(hint):
        yield from _classes_in(argument)
    origin = typing.get_origin(hint)
    if isinstance(origin, type):
        yield origin


def test_every_type_a_method_returns_is_exported() -> None:
    """A user can annotate with any type a client method returns."""
    for cls in (FlowithClientBase, ConversationSession):
        for name, member in inspect.getmembers(cls, callable):
            if name.startswith("_"):
                continue
            returned = typing.get_type_hints(member).get("return")
            for found in _classes_in(returned):
                if found.__module__.startswith("flowith_proto"):
                    assert found.__name__ in flowith_httpx.__all__, (name, found)


def test_every_type_a_constructor_takes_is_exported() -> None:
    """A typed wrapper can annotate the client's settings from the package itself."""
    for package in (flowith_httpx, flowith_aiohttp):
        hints = typing.get_type_hints(package.FlowithClient.__init__)
        for name in ("edge_auth", "on_token_refresh"):
            for found in (*_classes_in(hints[name]), *typing.get_args(hints[name])):
                module = getattr(found, "__module__", "")
                if module.startswith("flowith_proto"):
                    assert getattr(found, "__name__", None) in package.__all__, (name, found)
    assert flowith_httpx.EdgeAuth is flowith_aiohttp.EdgeAuth
    assert flowith_httpx.TokenCallback is flowith_aiohttp.TokenCallback


def test_clients_are_the_shared_base() -> None:
    assert issubclass(flowith_httpx.FlowithClient, FlowithClientBase)
    assert issubclass(flowith_aiohttp.FlowithClient, FlowithClientBase)
    assert flowith_httpx.ConversationSession is ConversationSession
    assert public_methods(ConversationSession).keys() >= {"send", "send_stream", "delete"}


def test_d25_importing_configures_no_logging_and_no_other_transport() -> None:
    program = textwrap.dedent(
        """
        import logging, sys
        import flowith_proto
        assert "httpx" not in sys.modules and "aiohttp" not in sys.modules, "core imports I/O"
        import flowith_httpx
        assert "aiohttp" not in sys.modules, "the httpx transport imports aiohttp"
        import flowith_aiohttp
        ours = logging.getLogger("flowith")
        assert ours.level == logging.NOTSET, ours.level
        assert all(isinstance(h, logging.NullHandler) for h in ours.handlers), ours.handlers
        assert logging.getLogger().handlers == [], logging.getLogger().handlers
        assert logging.getLogger().level == logging.WARNING
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
