"""User-facing errors: one clear line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import sys
from typing import Callable, NoReturn


class UserError(Exception):
    """A problem the user can fix (bad path, bad setting, bad input)."""


EXIT_USER_ERROR = 2


def fail(message: str) -> NoReturn:
    """Print one line to stderr and exit with code 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USER_ERROR)


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run `main`, turning UserError into one stderr line and exit code 2."""
    try:
        code = main(argv)
    except UserError as err:
        fail(str(err))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130)
    raise SystemExit(code or 0)
