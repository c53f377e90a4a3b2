"""Generate docs/reference.md, the API reference, from the docstrings.

    python docs/gen_reference.py          # rewrite docs/reference.md
    python docs/gen_reference.py --check  # fail if out of date, or a public name has no docstring

``nox -s docs`` runs the check, and so does the test suite.
"""

from __future__ import annotations

import argparse
import enum
import importlib
import inspect
import sys
import typing
from pathlib import Path
from typing import Any

import attrs

import flowith_httpx
import flowith_httpx.testing
import flowith_proto.replay
from flowith_proto.abc import ConversationSession, FlowithClientBase, OperationRun

REFERENCE = Path(__file__).parent / "reference.md"

INTRO = """# API reference

Generated from the docstrings by `python docs/gen_reference.py`; do not edit by hand.
`flowith_httpx` and `flowith_aiohttp` export the same names with the same signatures;
`FlowithClient` below is either (the aiohttp one takes an `aiohttp.ClientSession` as
`http_client`).
"""


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__ or "")


def _comment_doc(name: str) -> str:
    """The ``#:`` comment above ``name = ...`` in the core module that defines it:
    how a constant or a type alias, which has no docstring, is documented."""
    for module_name, module in sorted(sys.modules.items()):
        if not module_name.startswith("flowith_proto") or name not in vars(module):
            continue
        lines = inspect.getsource(module).splitlines()
        for index, line in enumerate(lines):
            if line.startswith((f"{name} =", f"{name}:")):
                start = index
                while start > 0 and lines[start - 1].startswith("#:"):
                    start -= 1
                comment = " ".join(text[2:].strip() for text in lines[start:index])
                if comment:
                    return comment
    return ""


def _is_class(obj: Any) -> bool:
    """A class, not a parametrized alias such as ``Callable[[str], None]`` (which
    Python 3.10's ``inspect.isclass`` also calls a class)."""
    return inspect.isclass(obj) and typing.get_origin(obj) is None


def _signature(name: str, obj: Any) -> str:
    """``name(params) -> result`` with annotations written as in the source, after
    ``async`` for a coroutine function: what must be awaited shows."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return name
    parts: list[str] = []
    star_done = False
    for parameter in signature.parameters.values():
        if parameter.name == "self":
            continue
        if parameter.kind is parameter.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        if parameter.kind is parameter.VAR_KEYWORD:
            parts.append(f"**{parameter.name}")
            continue
        if parameter.kind is parameter.VAR_POSITIONAL:
            parts.append(f"*{parameter.name}")
            star_done = True
            continue
        text = parameter.name
        if parameter.annotation is not parameter.empty:
            text += f": {_annotation(parameter.annotation)}"
        if parameter.default is not parameter.empty:
            default = parameter.default
            if default is attrs.NOTHING:  # an attrs field with a factory
                shown = _made_default(obj, parameter.name)
            elif isinstance(default, enum.Enum):
                shown = repr(default.value)
            else:
                shown = repr(default)
            text += f" = {shown}"
        parts.append(text)
    result = ""
    if signature.return_annotation is not signature.empty:
        result = f" -> {_annotation(signature.return_annotation)}"
    prefix = "async " if inspect.iscoroutinefunction(obj) else ""
    return f"{prefix}{name}({', '.join(parts)}){result}"


def _made_default(cls: Any, name: str) -> str:
    """How an attrs field's factory default reads: ``dict()``, ``RetryPolicy()``."""
    if attrs.has(cls):
        for field in attrs.fields(cls):
            if (field.alias or field.name) == name and isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
                return f"{getattr(field.default.factory, '__name__', 'factory')}()"
    return "<factory>"


def _annotation(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _methods(cls: type) -> list[tuple[str, Any]]:
    found = []
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") or not (callable(member) or isinstance(member, property)):
            continue
        found.append((name, member))
    return found


def _class_section(title: str, cls: type, missing: list[str]) -> list[str]:
    lines = [f"## `{title}`", "", _doc(cls), ""]
    if attrs.has(cls):
        fields = ", ".join(
            f.alias or f.name for f in attrs.fields(cls) if not f.name.startswith("_")
        )
        lines += [f"Fields: {fields}.", ""]
    for name, member in _methods(cls):
        target = member.fget if isinstance(member, property) else member
        doc = _doc(target)
        if not doc and not attrs.has(cls):
            missing.append(f"{title}.{name}")
        heading = name if isinstance(member, property) else _signature(name, target)
        lines += [f"### `{heading}`", "", doc or "", ""]
    return lines


def _own_members(title: str, cls: type, missing: list[str]) -> list[str]:
    """The methods and properties a result type adds (``save()``, ``text``...)."""
    lines: list[str] = []
    for name, member in _methods(cls):
        if name not in vars(cls):
            continue
        target = member.fget if isinstance(member, property) else member
        if not _doc(target):
            missing.append(f"{title}.{name}")
        heading = f"{title}.{name}" if isinstance(member, property) else _signature(name, target)
        lines += [f"### `{heading}`", "", _doc(target), ""]
    return lines


def render() -> tuple[str, list[str]]:
    """The reference text, and the public names that have no docstring."""
    missing: list[str] = []
    lines = [INTRO, ""]
    constructor = _signature("FlowithClient", flowith_httpx.FlowithClient.__init__)
    lines += [f"## `{constructor}`", "", _doc(flowith_httpx.FlowithClient), ""]
    lines += _class_section("FlowithClient", FlowithClientBase, missing)[4:]
    lines += _class_section("ConversationSession", ConversationSession, missing)
    lines += _class_section("OperationRun (what generate_stream returns)", OperationRun, missing)
    lines += ["# Types, enums and errors", ""]
    for name in sorted(flowith_httpx.__all__):
        obj = getattr(flowith_httpx, name)
        if name in ("FlowithClient", "ConversationSession", "OperationRun"):
            continue
        if not _is_class(obj):
            if typing.get_origin(obj) is not None:  # a type alias
                doc = _comment_doc(name)
                shown = _annotation(obj).replace("collections.abc.", "").replace("'", "")
                lines += [f"## `{name}` = `{shown}`", "", doc, ""]
                if not doc:
                    missing.append(name)
            continue
        if issubclass(obj, enum.Enum):
            # Aliases too (a DEFAULT naming another member), which iterating skips.
            members = ", ".join(f"`{key}` = `{m.value!r}`" for key, m in obj.__members__.items())
            lines += [f"## `{name}`", "", _doc(obj), "", members, ""]
        else:
            lines += [f"## `{name}`", "", _doc(obj), ""]
            if attrs.has(obj):
                fields = ", ".join(
                    f.alias or f.name for f in attrs.fields(obj) if not f.name.startswith("_")
                )
                lines += [f"Fields: {fields}.", ""]
                lines += _own_members(name, obj, missing)
        if not _doc(obj):
            missing.append(name)
    lines += ["## `set_log_level(level)`", "", _doc(flowith_httpx.set_log_level), ""]
    lines += ["# Offline testing", ""]
    lines += _class_section(
        "flowith_httpx.testing.ReplayClient", flowith_httpx.testing.ReplayClient, missing
    )[:4]
    replay = flowith_proto.replay.replay_operation
    lines += [
        f"## `{_signature('flowith_proto.replay.replay_operation', replay)}`",
        "",
        _doc(replay),
        "",
    ]
    lines += _core_sections(missing)
    text = "\n".join(lines).rstrip() + "\n"
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text, missing


#: The core's modules a user of the core drives directly: decoding and routing a
#: stream, operations and their effects, typed rows, requests, and replays.
CORE_MODULES = (
    "flowith_proto.sse",
    "flowith_proto.events",
    "flowith_proto.demux",
    "flowith_proto.stream",
    "flowith_proto.thinking",
    "flowith_proto.effects",
    "flowith_proto.state",
    "flowith_proto.request",
    "flowith_proto.convert",
    "flowith_proto.generation",
    "flowith_proto.media",
    "flowith_proto.queries",
    "flowith_proto.uploads",
    "flowith_proto.calls",
    "flowith_proto.replay",
    "flowith_proto.cassette",
)


def _core_sections(missing: list[str]) -> list[str]:
    """Each core module's docstring and its public names (``__all__``)."""
    lines = [
        "# The sans-I/O core (`flowith_proto`)",
        "",
        "No event loop, socket or clock: the transports above are drivers of these.",
        "",
    ]
    for module_name in CORE_MODULES:
        module = importlib.import_module(module_name)
        lines += [f"## `{module_name}`", "", _doc(module), ""]
        if not _doc(module):
            missing.append(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            title = f"{module_name}.{name}"
            if _is_class(obj):
                lines += [f"### `{_signature(name, obj)}`", "", _doc(obj), ""]
                if attrs.has(obj):
                    fields = ", ".join(
                        f.alias or f.name for f in attrs.fields(obj) if not f.name.startswith("_")
                    )
                    lines += [f"Fields: {fields}.", ""] if fields else []
                for method, member in _methods(obj):
                    if method not in vars(obj):
                        continue
                    target = member.fget if isinstance(member, property) else member
                    if not _doc(target):
                        continue  # attrs-made and dunder-like helpers say nothing new
                    heading = (
                        f"{name}.{method}"
                        if isinstance(member, property)
                        else _signature(f"{name}.{method}", target)
                    )
                    lines += [f"#### `{heading}`", "", _doc(target), ""]
            elif callable(obj) and typing.get_origin(obj) is None:
                lines += [f"### `{_signature(name, obj)}`", "", _doc(obj), ""]
            else:  # a constant, or a type alias
                shown = _annotation(obj) if typing.get_origin(obj) is not None else repr(obj)
                lines += [f"### `{name}` = `{shown}`", ""]
                continue
            if not _doc(obj):
                missing.append(title)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text, missing = render()
    if missing:
        print("public names without a docstring: " + ", ".join(missing), file=sys.stderr)
        return 1
    if args.check:
        if not REFERENCE.exists() or REFERENCE.read_text(encoding="utf-8") != text:
            print(
                "docs/reference.md is out of date: run python docs/gen_reference.py",
                file=sys.stderr,
            )
            return 1
        return 0
    REFERENCE.write_text(text, encoding="utf-8")
    print(f"wrote {REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
