"""Which commit produced a result: recorded in RESULTS.md rows and packed models."""
from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit(path: str | Path = ".") -> str:
    """Short commit hash of the repository holding ``path``, with ``-dirty`` for uncommitted changes
    to tracked files; ``unknown`` outside a git checkout."""
    try:
        sha = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
