"""RESULTS.md: one markdown table of every scored decoding, built only from files on disk.

Each row comes from a ``score/result.json`` (numbers, written by :func:`score_dir`) and the
``decode_info.yaml`` of its decode dir (model, config, decoding settings). The writer formats
what it is given and prints ``-`` for anything absent: it never computes or invents a number.

Expected layout (the template's stages 7-8)::

    exp/<asr_exp>/decode_<tag>/<data_set>/decode_info.yaml
    exp/<asr_exp>/decode_<tag>/<data_set>/score/result.json

``decode_<tag>/score/result.json`` (one set per decode dir) is found as well.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Iterable, Mapping

import yaml

from speechllm.utils.config import atomic_write_text

logger = logging.getLogger(__name__)

# (column header, row key)
COLUMNS = (
    ("data set", "data_set"),
    ("model", "model"),
    ("config", "config"),
    ("WER", "wer"),
    ("CER", "cer"),
    ("#utts", "num_utts"),
    ("decoding settings", "decoding"),
    ("commit", "commit"),
)
MISSING = "-"
MAX_SPEAKER_NOTES = 8  # sets with 2..8 speakers (e.g. held-out test voices) get a per-speaker WER note


def table_cell(value: object) -> str:
    """One table cell: floats with 2 decimals, ``-`` for absent, pipes escaped."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, Mapping):
        value = ", ".join(f"{k}={v}" for k, v in value.items())
    return " ".join(str(value).split()).replace("|", "\\|")


def _decoding_settings(info: Mapping) -> object:
    """The decoding settings of a decode_info.yaml: ``decoding`` as written, else the keys that
    are not model/config/data (so an unknown layout still shows what it recorded)."""
    for key in ("decoding", "decode_conf", "inference_conf"):
        if info.get(key):
            return info[key]
    skip = {"model", "config", "asr_config", "sllm_config", "data", "data_set", "commit"}
    rest = {k: v for k, v in info.items() if k not in skip and v not in (None, "")}
    return rest or None


def row_from_files(result_json: str | os.PathLike, exp_dir: str | os.PathLike | None = None) -> dict:
    """One table row from a ``result.json`` and the ``decode_info.yaml`` next to its score dir.

    Model paths are shown relative to ``exp_dir`` when they lie under it.
    """
    result_json = Path(result_json)
    result = json.loads(result_json.read_text(encoding="utf-8"))
    info_path = result_json.parent.parent / "decode_info.yaml"
    info = {}
    if info_path.is_file():
        info = yaml.safe_load(info_path.read_text(encoding="utf-8")) or {}
    else:
        logger.warning("%s: no decode_info.yaml; model/config/decoding columns left as '-'", info_path)
    model = info.get("model")
    if model and exp_dir is not None:
        try:
            model = str(Path(model).resolve().relative_to(Path(exp_dir).resolve()))
        except ValueError:
            pass
    data_set = result.get("data_set") or (Path(info["data"]).name if info.get("data") else None)
    return {
        "data_set": data_set,
        "model": model,
        "config": info.get("asr_config") or info.get("sllm_config") or info.get("config"),
        "wer": result.get("wer"),
        "cer": result.get("cer"),
        "num_utts": result.get("num_utts"),
        "decoding": _decoding_settings(info),
        "commit": info.get("commit") or result.get("commit"),
        # not table columns: shown as notes under the table when non-zero
        "num_missing_hyp": result.get("num_missing_hyp"),
        "num_empty_hyp": result.get("num_empty_hyp"),
        "num_looping_hyp": result.get("num_looping_hyp"),
        "num_truncated_hyp": result.get("num_truncated_hyp"),
        "per_speaker": result.get("per_speaker"),
        "source": str(result_json),
    }


def collect_rows(exp_dir: str | os.PathLike) -> list[dict]:
    """Rows for every ``score/result.json`` below ``exp_dir``, sorted by model then data set."""
    exp_dir = Path(exp_dir)
    paths = sorted(exp_dir.glob("**/score/result.json"))
    rows = [row_from_files(p, exp_dir) for p in paths]
    return sorted(rows, key=lambda r: (str(r["model"]), str(r["data_set"]), r["source"]))


def _scope_note(kept: list[tuple[frozenset[str] | None, int, str]]) -> str:
    """`` (for a b c)``: the units a scoped stage's time covers, so that a table whose systems were
    not all timed (a run stopped before its time was written) does not pass the time off as theirs."""
    if any(scope is None for scope, _, _ in kept):
        return ""
    return " (for " + " ".join(sorted(set().union(*(scope for scope, _, _ in kept)))) + ")"


def stage_time_lines(stage_times_tsv: str | os.PathLike) -> list[str]:
    """Header lines from the template's ``stage_times.tsv`` (``stage name seconds date [command
    [partial [scope]]]``; stages ``1``, ``3b``, ``5b``, ...).

    A stage run again replaces its earlier time, unless the row says ``partial``: that run found
    part of the work done (it logged ``skip:``, e.g. the systems trained before) and did the rest,
    so its time adds to the earlier one. A row with a ``scope`` (space-separated units of work,
    e.g. the systems a per-system stage ran over) replaces only earlier rows whose scope it
    covers, so a run of other systems adds to the time; a row without one covers everything. The
    total is the sum over stages; a stage timed by scoped rows only says the units it covers
    (``4 train 2374 s (for a b c)``). When the times come from more than one invocation, a second
    line names each command and the stages it contributed (rows written before commands were
    recorded show as "not recorded").
    """
    # per stage: the runs that count, each (scope or None = everything, seconds, command)
    runs: dict[tuple[int, str, str], list[tuple[frozenset[str] | None, int, str]]] = {}
    for line in Path(stage_times_tsv).read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        m = re.fullmatch(r"(\d+)([a-z]*)", parts[0])
        if len(parts) < 3 or not m:
            continue
        key, sec = (int(m[1]), m[2], parts[1]), int(float(parts[2]))
        cmd = parts[4] if len(parts) >= 5 else ""
        partial = len(parts) >= 6 and parts[5] == "partial"
        scope = frozenset(parts[6].split()) if len(parts) >= 7 and parts[6].strip() else None
        kept = runs.get(key, [])
        if not partial:
            kept = [r for r in kept if scope is not None and (r[0] is None or not r[0] <= scope)]
        runs[key] = kept + [(scope, sec, cmd)]
    if not runs:
        return []
    seconds = {key: sum(sec for _, sec, _ in kept) for key, kept in runs.items()}
    total = sum(seconds.values())
    per_stage = ", ".join(f"{n}{sub} {name} {sec} s{_scope_note(runs[(n, sub, name)])}"
                          for (n, sub, name), sec in sorted(seconds.items()))
    lines = [f"Total run time: {total / 60:.1f} min ({total} s); per stage: {per_stage}"]
    by_command: dict[str, list[str]] = {}
    for (n, sub, _), kept in sorted(runs.items()):
        for cmd in dict.fromkeys(cmd for _, _, cmd in kept):
            by_command.setdefault(cmd, []).append(f"{n}{sub}")
    if len(by_command) > 1:
        lines.append("Stage times from several invocations: " + "; ".join(
            f"{f'`{cmd}`' if cmd else 'command not recorded'} (stages {' '.join(stages)})"
            for cmd, stages in by_command.items()))
    return lines


def write_results_md(rows: Iterable[Mapping], path: str | os.PathLike, title: str = "RESULTS",
                     header_lines: Iterable[str] = ()) -> str:
    """Write ``path`` as a markdown table of ``rows`` and return the text.

    Args:
        rows: dicts with the keys of :data:`COLUMNS` (``data_set``, ``model``, ``config``,
            ``wer``, ``cer``, ``num_utts``, ``decoding``, ``commit``), e.g. from
            :func:`collect_rows`; absent keys print ``-``. Optional ``num_missing_hyp``,
            ``num_empty_hyp``, ``num_looping_hyp`` add a note line per row when non-zero, and
            ``per_speaker`` (2 to ``MAX_SPEAKER_NOTES`` speakers) the WER of each speaker.
        title: the ``#`` heading.
        header_lines: free lines (run time, machine, corpus) listed above the table.
    """
    rows = list(rows)
    out = [f"# {title}", ""]
    header_lines = [h for h in header_lines if h]
    if header_lines:
        out += [f"- {h}" for h in header_lines] + [""]
    out.append("| " + " | ".join(h for h, _ in COLUMNS) + " |")
    out.append("|" + "|".join("---" for _ in COLUMNS) + "|")
    for row in rows:
        out.append("| " + " | ".join(table_cell(row.get(key)) for _, key in COLUMNS) + " |")
    if not rows:
        out.append("")
        out.append("No scored decodings found.")
    notes = []
    # Rows of one data set and model (e.g. decoded with and without an LM) are told apart in the
    # notes by their decode directory.
    keys = [(table_cell(r.get("data_set")), table_cell(r.get("model"))) for r in rows]
    for row, key in zip(rows, keys):
        parts = [f"{row.get(k)} {what}" for k, what in (
            ("num_missing_hyp", "missing hypotheses (scored as deletions)"),
            ("num_empty_hyp", "empty hypotheses"),
            ("num_looping_hyp", "looping hypotheses"),
            ("num_truncated_hyp", "hypotheses cut at the length bound"),
        ) if row.get(k)]
        speakers = row.get("per_speaker") or {}
        if 1 < len(speakers) <= MAX_SPEAKER_NOTES:
            parts.append("WER per speaker " + ", ".join(f"{spk} {table_cell(v.get('wer'))}" for spk, v in speakers.items()))
        if parts:
            label = f"{key[0]} / {key[1]}"
            if keys.count(key) > 1 and row.get("source"):
                label += f" ({Path(row['source']).parents[2].name})"
            notes.append(f"- {label}: " + ", ".join(parts))
    if notes:
        out += ["", "Notes:"] + notes
    out += ["", "WER/CER in percent, after `speechllm.text.normalizer.normalize_text` "
                "(see docs/scoring.md); every number comes from a `score/result.json`."]
    text = "\n".join(out) + "\n"
    atomic_write_text(path, text)
    return text
