"""The pytest plugin's checks, run as a user's project runs them: in a pytest of its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_USER_TESTS = '''
import pytest
from flowith_proto.fake import chunk, complete


def answer(fake):
    return fake.handle("GET", "/rest/v1/conversation", (), b"", now=0.0).status


def test_scripted_and_never_run(flowith_fake):
    flowith_fake.script(chunk("never "), complete())
    flowith_fake.fail_next(2, 503, method="GET", path="/rest/v1/conversation")
    assert answer(flowith_fake) == 503


@pytest.mark.flowith(assert_all_used=False)
def test_left_unused_on_purpose(flowith_fake):
    flowith_fake.script(complete())


def test_fails_on_its_own(flowith_fake):
    flowith_fake.script(complete())
    assert False, "the test's own failure"


def test_uses_all_it_sets_up(flowith_fake):
    flowith_fake.fail_next(1, 503)
    assert answer(flowith_fake) == 503


def test_skipped_as_it_runs(flowith_fake):
    flowith_fake.script(complete())
    pytest.skip("not on this machine")


@pytest.mark.xfail(reason="a known bug")
def test_failing_as_expected(flowith_fake):
    flowith_fake.script(complete())
    assert False
'''


def test_a_test_that_leaves_scripts_or_faults_unused_fails(tmp_path: Path) -> None:
    """A script no generation took means the code under test never ran what the
    test set up: the test passed for the wrong reason (respx fails an uncalled route)."""
    (tmp_path / "test_user.py").write_text(_USER_TESTS, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "test_user.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = done.stdout
    assert "1 failed, 3 passed, 1 skipped, 1 xfailed, 1 error" in out, out + done.stderr
    assert "ERROR test_user.py::test_scripted_and_never_run" in out
    assert "the test ended with what it set up on flowith_fake unused" in out
    assert "script(ChunkStep(text='never '), CompleteStep(" in out
    assert "fail_next: 1 more 503 answer(s) (method='GET', path='/rest/v1/conversation')" in out
    # A test failing on its own is not also blamed for what it left unused.
    assert "ERROR test_user.py::test_fails_on_its_own" not in out
    assert "FAILED test_user.py::test_fails_on_its_own" in out
    # Nor is a test skipped as it runs, or one failing as expected: neither passed.
    assert "at teardown of test_skipped_as_it_runs" not in out
    assert "at teardown of test_failing_as_expected" not in out
