"""Test helper: what a refused command must look like."""
from __future__ import annotations


def assert_user_error(result, *fragments: str) -> None:
    """Exit code 2, no traceback, and a last stderr line "error: ..." holding every fragment."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(f in last for f in fragments), last
