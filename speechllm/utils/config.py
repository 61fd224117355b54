"""YAML configs with command-line overrides, and the resolved config saved next to a run.

Every training/inference entry point takes ``--config conf/x.yaml`` and any number of
``--key value`` overrides. Dotted keys reach into nested dicts
(``--encoder_conf.num_blocks 4``); values are parsed as YAML scalars, so ``4`` is an
int, ``0.1`` a float, ``true`` a bool and ``[1,2]`` a list.
"""
from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import yaml


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the source."""


def load_yaml(path: str | os.PathLike) -> dict:
    """Read one YAML mapping; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with path.open(encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def set_by_dotted_key(config: dict, key: str, value: Any) -> None:
    """Set ``config["a"]["b"] = value`` for key ``"a.b"``, creating dicts on the way."""
    parts = key.split(".")
    node = config
    for p in parts[:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override --{key}: '{p}' is not a mapping in the config")
        node = child
    node[parts[-1]] = value


def parse_overrides(argv: Iterable[str]) -> dict[str, Any]:
    """Turn ``["--a.b", "3", "--c", "x"]`` into ``{"a.b": 3, "c": "x"}``."""
    argv = list(argv)
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("--"):
            raise ConfigError(f"override '{tok}': expected --key value")
        if "=" in tok:
            key, raw = tok[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(argv):
                raise ConfigError(f"override '{tok}' has no value")
            key, raw = tok[2:], argv[i + 1]
            i += 2
        try:
            out[key] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            out[key] = raw
    return out


def merge_overrides(config: dict, overrides: dict[str, Any]) -> dict:
    """Return a deep copy of ``config`` with dotted-key overrides applied."""
    config = copy.deepcopy(config)
    for key, value in overrides.items():
        set_by_dotted_key(config, key, value)
    return config


def load_config(path: str | os.PathLike | None, overrides: Iterable[str] = ()) -> dict:
    """Load ``path`` (or start empty) and apply ``--key value`` overrides from ``overrides``."""
    base = load_yaml(path) if path else {}
    return merge_overrides(base, parse_overrides(overrides))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write through a temp file in the same directory and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        # mkstemp makes the file 0600; give it the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_config(config: dict, path: str | os.PathLike) -> None:
    """Save the resolved config (what the run really used) as YAML."""
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
