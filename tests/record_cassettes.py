"""Re-record the cassettes in tests/cassettes from the fake Flowith.

    python -m tests.record_cassettes

Run it after changing what the client sends; the replay tests then check the
new recording (and fail with a diff until it is re-recorded).
"""

from __future__ import annotations

import anyio

from tests.sessions import CASSETTES, record


def main() -> None:
    CASSETTES.mkdir(exist_ok=True)
    path = CASSETTES / "broad_session.jsonl"
    anyio.run(record, path, backend="asyncio")
    print(f"recorded {path}")


if __name__ == "__main__":
    main()
