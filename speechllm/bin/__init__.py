"""Command-line entry points: ``python -m speechllm.bin.NAME --help``.

Each module has ``main(argv=None) -> int``. Bad input (``DataDirError``, ``AudioError``)
ends the program with exit status 1 and just the message, no traceback.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable

from speechllm.data.audio import AudioError
from speechllm.data.datadir import DataDirError

USER_ERRORS: tuple[type[Exception], ...] = (DataDirError, AudioError)


def exit_on_user_error(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate ``main`` so that a user-input error prints its message and returns 1."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as e:
            print(e, file=sys.stderr)
            return 1

    return wrapper
