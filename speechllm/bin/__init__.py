"""Command-line entry points: ``python -m speechllm.bin.NAME --help``.

Each module has ``main(argv=None) -> int``. Bad input (``DataDirError``, ``AudioError``,
``ConfigError``, a missing file) ends the program with exit status 1 and just the message, no
traceback.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable

from speechllm.data.audio import AudioError
from speechllm.data.datadir import DataDirError
from speechllm.utils.config import ConfigError

USER_ERRORS: tuple[type[Exception], ...] = (DataDirError, AudioError, ConfigError, FileNotFoundError)


def exit_on_user_error(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate ``main`` so that a user-input error prints its message and returns 1."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as e:
            prog = main.__module__.rsplit(".", 1)[-1]
            print(f"{prog}: {e}", file=sys.stderr)
            return 1

    return wrapper
