r"""The systems of an MTBI recipe: names -> (training config, overrides), resolved and checked.

    python -m speechllm.bin.mtbi_systems --systems_file conf/systems.yaml \
        --systems "asr_only mtbi mtbi_il" --out_dir exp/systems [--args "--max_epoch 1"]

``--systems_file`` maps each system's name to its training config, the ``--key value`` overrides
that make it that system, and the label of its row in the MTBI table::

    asr_only: {label: ASR-only baseline, config: conf/train_mtbi.yaml, args: "--mtbi null"}
    mtbi_il:  {label: MTBI + interleaving, config: conf/train_mtbi.yaml, args: "--mtbi.interleave_prob 0.5"}

For each system named in ``--systems`` (in that order) this writes ``OUT_DIR/<name>.yaml``: the
config with the system's overrides applied, which the training stage passes as ``--config`` (the
Trainer saves the fully resolved one in the system's exp dir). It checks, before any hour is spent,
that the ``mtbi:`` blocks are valid, that every system has the same budget (``BUDGET_KEYS``), the
same LLM and the same prompt file (``--args``, the recipe's overrides for all systems, applied
last), and that ``--args`` sets nothing under a block a system turns off (``--lora.r 8`` would
bring back the LoRA that ``--lora null`` removed), and prints one line a system for the recipe,
tab separated::

    name  label  config_written  uses_targets(0|1)  interleaves(0|1)  llm  prompts_file

``uses_targets``: the system trains on imitation targets (an ``mtbi:`` block with
``transcribe_ratio < 1``); ``interleaves``: it needs the word alignment (``interleave_prob > 0``).
``llm`` is the configs' ``llm`` (``-`` when null: the recipe gives it).
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from speechllm.bin import exit_on_user_error
from speechllm.utils.config import ConfigError, load_config, load_yaml, merge_overrides, parse_overrides, save_config
from speechllm.utils.logging_utils import setup_logging

log = logging.getLogger(__name__)

# Trainer options that must be equal across the systems of one comparison (same data and budget).
BUDGET_KEYS = ("max_epoch", "batch_bins", "accum_grad")
ENTRY_KEYS = {"config", "args", "label"}
# Filled in by the recipe: a system's mtbi block may leave them null.
RECIPE_PATHS = {"targets": "<targets of the recipe>", "word_align": "<word alignment of the recipe>"}


def read_systems(path: Path) -> dict[str, dict[str, str]]:
    """``{name: {config, args, label}}`` of a systems file, every entry checked."""
    data = load_yaml(path)
    systems = {}
    for name, entry in data.items():
        if not isinstance(entry, dict) or "config" not in entry:
            raise ConfigError(f"{path}: system {name!r} needs a mapping with config: (and optional args:, label:)")
        unknown = sorted(set(entry) - ENTRY_KEYS)
        if unknown:
            raise ConfigError(f"{path}: system {name!r}: unknown key(s) {unknown}; allowed: {sorted(ENTRY_KEYS)}")
        systems[str(name)] = {"config": str(entry["config"]), "args": str(entry.get("args") or ""),
                              "label": str(entry.get("label") or name)}
    return systems


def mtbi_flags(config: dict, name: str) -> tuple[bool, bool]:
    """(uses_targets, interleaves) of a resolved config; its mtbi block validated."""
    from speechllm.mtbi.collate import MTBIConfig

    block = config.get("mtbi")
    if not block:
        return False, False
    if not isinstance(block, dict):
        raise ConfigError(f"system {name}: mtbi: expected a mapping or null, got {block!r}")
    filled = {key: block.get(key) or placeholder for key, placeholder in RECIPE_PATHS.items()}
    try:
        mtbi = MTBIConfig.from_dict({**block, **filled})
    except ConfigError as e:
        raise ConfigError(f"system {name}: {e}") from None
    return mtbi.transcribe_ratio < 1.0, mtbi.interleave_prob > 0


def same_across(resolved: dict[str, dict], key: str) -> Any:
    """The value of ``key`` shared by every system's config; ConfigError naming the differences."""
    values = {name: config.get(key) for name, config in resolved.items()}
    if len({repr(v) for v in values.values()}) > 1:
        listing = ", ".join(f"{name} {value!r}" for name, value in values.items())
        raise ConfigError(f"the systems differ in {key}: {listing}; a comparison needs the same {key} for every "
                          f"system (set it in the config or in the recipe's overrides, not per system)")
    return next(iter(values.values()))


def revived_blocks(config: dict, overrides: dict) -> dict[str, str]:
    """Override key -> the block it is under that ``config`` turns off (``--lora.r 8`` where
    ``lora: null``): merging it would silently bring the block back."""
    out = {}
    for key in overrides:
        node, parts = config, key.split(".")
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node, dict) or part not in node:
                break
            if node[part] is None:
                out[key] = ".".join(parts[:i + 1])
                break
            node = node[part]
    return out


def resolve_systems(systems_file: Path, names: list[str], common_args: str, out_dir: Path) -> list[list[str]]:
    """Write each system's config into ``out_dir`` and return the rows printed by :func:`main`."""
    systems = read_systems(systems_file)
    unknown = [n for n in names if n not in systems]
    if unknown:
        raise ConfigError(f"unknown system(s) {unknown}; {systems_file} defines {sorted(systems)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--systems names a system twice: {names}")
    if not names:
        raise ConfigError("--systems is empty")
    common = parse_overrides(shlex.split(common_args))
    written, resolved = {}, {}
    for name in names:
        entry = systems[name]
        written[name] = load_config(entry["config"], shlex.split(entry["args"]))
        for key, block in revived_blocks(written[name], common).items():
            raise ConfigError(f"system {name} turns {block} off ({block}: null), and the common option --{key} "
                              f"would bring it back; give that option in the {systems_file} entries that use it")
        resolved[name] = merge_overrides(written[name], common)
    for key in BUDGET_KEYS:
        same_across(resolved, key)
    llm = same_across(resolved, "llm")
    prompts = same_across(resolved, "prompts") or {}
    if not prompts.get("file"):
        raise ConfigError("the systems' configs need prompts.file: the prompt set the targets are made from")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        uses_targets, interleaves = mtbi_flags(resolved[name], name)
        path = out_dir / f"{name}.yaml"
        save_config(written[name], path)
        rows.append([name, systems[name]["label"], str(path), str(int(uses_targets)), str(int(interleaves)),
                     str(llm or "-"), str(prompts["file"])])
        kind = "imitation targets" if uses_targets else "transcription only"
        kind += " + interleaving" if interleaves else ""
        log.info("system %s (%s): %s %s -> %s (%s)", name, systems[name]["label"], systems[name]["config"],
                 systems[name]["args"], path, kind)
    budget = ", ".join(f"{k} {resolved[names[0]].get(k)}" for k in BUDGET_KEYS)
    log.info("%d systems with the same budget: %s", len(names), budget)
    return rows


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems_file", type=Path, required=True, help="YAML: name -> {config, args, label}")
    p.add_argument("--systems", required=True, help="names of the systems to run, space separated, in table order")
    p.add_argument("--out_dir", type=Path, required=True, help="where <name>.yaml of each system is written")
    p.add_argument("--args", default="", help="--key value overrides the recipe applies to every system")
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    rows = resolve_systems(args.systems_file, args.systems.split(), args.args, args.out_dir)
    for row in rows:
        if any("\t" in field or "\n" in field for field in row):
            raise ConfigError(f"system {row[0]}: a label or path holds a tab or newline: {row}")
        print("\t".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
