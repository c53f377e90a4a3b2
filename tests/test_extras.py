"""Installing flowith without an extra: what works, and what names the extra to add.

Each check runs in a fresh interpreter where the extras' modules cannot be
imported (``sys.modules[name] = None``), as in an install without them.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from flowith_proto.extras import EXTRAS

_EVERY_EXTRA = ("httpx", "anyio", "h11", "aiohttp", "async_timeout", "trio")


def _without(modules: tuple[str, ...], code: str, *args: str) -> subprocess.CompletedProcess[str]:
    blocked = "".join(f"sys.modules[{name!r}] = None\n" for name in modules)
    return subprocess.run(
        [sys.executable, "-c", f"import sys\n{blocked}{textwrap.dedent(code)}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_extras_named_are_the_ones_pyproject_declares() -> None:
    requirements = [Requirement(text) for text in importlib.metadata.requires("flowith") or []]
    for extra, modules in EXTRAS.items():
        declared = {
            requirement.name.replace("-", "_")
            for requirement in requirements
            if requirement.marker is not None
            and requirement.marker.evaluate({"extra": extra})
        }
        assert set(modules) == declared, extra


@pytest.mark.parametrize("argv", [["--help"], ["demo"], ["--version"], ["chat", "hi"]])
def test_the_command_without_the_httpx_extra_says_what_to_install(argv: list[str]) -> None:
    done = _without(
        _EVERY_EXTRA, "from flowith_httpx.__main__ import run\nsys.exit(run())", *argv
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "flowith: the flowith command needs the httpx extra (httpx, anyio, h11 not installed):"
        ' pip install "flowith[httpx]"\n'
    )


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("flowith_httpx.testing", ("httpx", "anyio", "h11")),
        ("flowith_httpx.testing", ("httpx",)),
        ("flowith_httpx.fake_server", ("httpx", "anyio", "h11")),
        ("flowith_httpx.fake_server", ("h11",)),
        ("flowith_httpx.client", ("httpx", "anyio", "h11")),
        ("flowith_httpx.client", ("httpx",)),
    ],
)
def test_a_documented_module_without_the_httpx_extra_names_it(
    module: str, absent: tuple[str, ...]
) -> None:
    # They let a bare "No module named 'anyio'" out of their imports.
    done = _without(absent, f"import {module}")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ModuleNotFoundError: {module} needs the httpx extra ("), last
    assert last.endswith('pip install "flowith[httpx]"'), last


def test_the_core_and_the_packages_import_without_extras() -> None:
    done = _without(
        _EVERY_EXTRA,
        """
        import flowith_proto, flowith_httpx
        from flowith_httpx import GenerationOutput, FlowithError
        try:
            from flowith_httpx import FlowithClient
        except ModuleNotFoundError as exc:
            print(exc.name, exc)
        try:
            import flowith_aiohttp
        except ModuleNotFoundError as exc:
            print(exc.name, exc)
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "anyio flowith_httpx needs the httpx extra (anyio not installed):"
        ' pip install "flowith[httpx]"',
        "aiohttp flowith_aiohttp needs the aiohttp extra (aiohttp not installed):"
        ' pip install "flowith[aiohttp]"',
    ]


#: Other packages' plugins that import the blocked modules (anyio, respx, and
#: hypothesis's trio hook), the cache (kept out of the repository), and assertion
#: rewriting (it trips on the ``None`` entries that stand for the missing modules).
_NO_OTHER_PLUGINS = (
    *("-p", "no:anyio", "-p", "no:respx", "-p", "no:hypothesispytest", "-p", "no:cacheprovider"),
    "--assert=plain",
)


def test_the_pytest_plugin_loads_without_extras(tmp_path: Path) -> None:
    """pytest loads the plugin in every project that has flowith installed; a
    user's own tests must run whatever extras are there, and a fixture that
    needs one names it."""
    (tmp_path / "test_user.py").write_text(
        "def test_unrelated():\n    assert True\n\n"
        "def test_with_the_fake(flowith_fake):\n    assert flowith_fake.token\n\n"
        "def test_with_a_replay(flowith_replay):\n    pass\n\n"
        "async def test_with_the_server(flowith_server):\n    pass\n\n"
        "async def test_with_a_client(flowith_client):\n    pass\n"
    )
    done = _without(
        _EVERY_EXTRA,
        f"""
        import pytest
        sys.exit(pytest.main([*{_NO_OTHER_PLUGINS!r}, "-q", "-rE", {str(tmp_path)!r}]))
        """,
    )
    assert "2 passed, 3 errors" in done.stdout, done.stdout + done.stderr
    served = "each of the flowith_server and flowith_client fixtures"
    for fixtures in ("the flowith_replay fixture", served):
        needs = f"{fixtures} needs the httpx extra (httpx, anyio, h11 not installed)"
        assert f'{needs}: pip install "flowith[httpx]"' in done.stdout
    # The async fixtures said so before pytest refused them for want of anyio.
    assert "no plugin or hook that handled it" not in done.stdout
