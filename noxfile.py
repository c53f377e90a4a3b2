"""Developer sessions: ``nox -s tests lint typecheck bench``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole suite, both async backends (asyncio and trio)."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check: the lint rules in pyproject.toml (formatting is not enforced)."""
    session.install("-e", ".[dev]")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the packages, tests and benchmarks."""
    session.install("-e", ".[dev]")
    session.run("mypy", "--strict")


@nox.session
def docs(session: nox.Session) -> None:
    """Check the generated API reference (docs/reference.md) and the docstrings;
    ``nox -s docs -- write`` regenerates it."""
    session.install("-e", ".[dev]")
    if "write" in session.posargs:
        session.run("python", "docs/gen_reference.py")
    else:
        session.run("python", "docs/gen_reference.py", "--check")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks side by side with the peers (httpx-sse, the old flowith_webapi client).

    ``nox -s bench`` runs them all (about 5 minutes on 2 cores);
    ``nox -s bench -- --quick`` is a smoke run; ``-- --only sse,e2e`` picks
    sections; ``-- --markdown benchmarks/RESULTS.md`` writes the results table.
    """
    session.install("-e", ".[dev]", "flowith-webapi==1.0.1")
    session.run("python", "-m", "benchmarks", *session.posargs)
