"""Command-line entry points: ``python -m speechllm.bin.NAME --help``.

Each module has ``main(argv=None) -> int``. Bad input (``DataDirError``, ``AudioError``,
``ConfigError``, a missing file) ends the program with exit status 1 and just the message, no
traceback.
"""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
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
            # Under ``python -m`` the module is __main__; argv[0] is then the module's file.
            module = main.__module__ if main.__module__ != "__main__" else sys.argv[0]
            prog = module.rsplit(".", 1)[-1] if main.__module__ != "__main__" else Path(module).stem
            print(f"{prog}: {e}", file=sys.stderr)
            return 1

    return wrapper


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """``--nj``/``--job``/``--combine``: the options of every entry point that splits a data dir into jobs."""
    parser.add_argument("--nj", type=int, default=1, help="number of parallel jobs")
    parser.add_argument("--job", type=int, default=1, help="this job's number, 1..nj")
    parser.add_argument("--combine", type=int, metavar="N", default=None, help="only merge the outputs of N jobs")


def check_job_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace, required: tuple[str, ...]) -> None:
    """Exit with a usage error when ``required`` options are missing (outside ``--combine``) or ``--job`` is off."""
    missing = [f"--{name}" for name in required if getattr(args, name) is None]
    if missing:
        parser.error(f"{' and '.join(missing)} required unless --combine is given")
    if not 1 <= args.job <= args.nj:
        parser.error(f"--job must be in 1..{args.nj}, got {args.job}")
