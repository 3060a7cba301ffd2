"""The type checker is part of the suite: mypy is clean over every layer (tests/typecheck.py)."""

from tests.typecheck import run_mypy


def test_mypy_is_clean():
    status, report = run_mypy()
    assert status == 0, report
