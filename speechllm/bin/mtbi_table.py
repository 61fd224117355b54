r"""The MTBI benchmark table: one row per system, from the ``result.json`` of ``mtbi_score``.

    python -m speechllm.bin.mtbi_table \
        --system "ASR-only baseline=exp/sllm_asr/decode_mtbi/test/mtbi_score/result.json" \
        --system "MTBI=exp/sllm_mtbi/decode_mtbi/test/mtbi_score/result.json" \
        --llm_row "text LLM on transcripts" --out RESULTS.md --section "MTBI benchmark: test"

``--systems FILE`` lists them in YAML instead (or as well), in order: a mapping ``label: path``
or a list of ``{label: ..., result: ...}``; paths are relative to the current directory.

The table goes into ``--out`` as a section between two HTML comments naming ``--section``: run
again, and that section is replaced; the rest of the file (e.g. the ``write_results`` table) is
kept, and a missing section is appended. Columns: WER of the transcription tasks with seen and
unseen wordings (seen tasks), agreement with the LLM with seen and unseen wordings,
instruction-following rate, per task ``--metric`` (accuracy against the reference, or agreement
with the LLM) for the seen and then the unseen tasks (transcription tasks are in the WER columns),
their means over examples, and the counts of empty, looping, cut and refusal-like outputs.
``--llm_row`` adds the text LLM's own answers scored against the references (read from the
first system's file). The writer formats numbers and computes one thing only: each system's
unseen-task accuracy minus that of a reference system, with a paired bootstrap interval, from the
``per_item.jsonl`` beside each ``result.json`` (``-`` where one is missing); one column per
``--reference LABEL`` (e.g. the baseline and the full system, for the ablation rows), by default
the first system; definitions: docs/mtbi.md. The sources list each system's training time where
its training run (the nearest directory above the ``result.json`` with a ``config.yaml``) wrote a
``train_time.json``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import re
import shlex
import sys
from pathlib import Path

import yaml

from speechllm.bin import exit_on_user_error
from speechllm.mtbi.evaluate import TRANSCRIPTION_ANSWER_TASKS, format_interval, paired_accuracy_difference
from speechllm.mtbi.targets import read_targets
from speechllm.scoring.results import MISSING, stage_time_lines
from speechllm.scoring.results import table_cell as cell
from speechllm.train.train_time import describe_train_time, read_train_time
from speechllm.utils.config import ConfigError, atomic_write_text
from speechllm.utils.git import git_commit
from speechllm.utils.logging_utils import setup_logging

log = logging.getLogger(__name__)
METRICS = {"accuracy": "acc.", "agreement": "agr."}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--system", action="append", default=[], metavar="LABEL=RESULT_JSON",
                   help="a row: its label and the result.json of mtbi_score (repeatable, in order)")
    p.add_argument("--systems", type=Path, help="YAML listing systems (label: path, or [{label, result}])")
    p.add_argument("--out", type=Path, default=Path("RESULTS.md"), help="markdown file the section goes into")
    p.add_argument("--section", default="MTBI benchmark", help="the section's heading (and its marker)")
    p.add_argument("--metric", choices=sorted(METRICS), default="accuracy", help="per-task columns")
    p.add_argument("--reference", action="append", default=[], metavar="LABEL",
                   help="compare every system's unseen-task accuracy with this system's (a paired "
                        "difference column; repeatable); default: the first system")
    p.add_argument("--llm_row", metavar="LABEL", help="add the text LLM's own scores (first system's file)")
    p.add_argument("--stage_times", type=Path, help="the template's stage_times.tsv: a run-time line")
    p.add_argument("--header", action="append", default=[], help="a free line above the table (repeatable)")
    return p


def split_system(spec: str) -> tuple[str, Path]:
    """``LABEL=PATH``; the first ``=`` after which an existing file is named (labels may hold ``=``)."""
    cuts = [m.start() for m in re.finditer("=", spec)]
    for i in cuts:
        if Path(spec[i + 1:]).is_file():
            return spec[:i].strip(), Path(spec[i + 1:])
    if not cuts:
        raise ConfigError(f"--system {spec!r}: expected LABEL=RESULT_JSON")
    raise FileNotFoundError(f"--system {spec!r}: no result.json at {spec[cuts[0] + 1:]}")


def systems_from_yaml(path: Path) -> list[tuple[str, Path]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        return [(str(k), Path(str(v))) for k, v in data.items()]
    if isinstance(data, list) and all(isinstance(x, dict) and {"label", "result"} <= set(x) for x in data):
        return [(str(x["label"]), Path(str(x["result"]))) for x in data]
    raise ConfigError(f"{path}: expected a mapping label -> result.json or a list of {{label, result}}")


def load_result(path: Path) -> dict:
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON: {e.msg}") from None
    if not isinstance(result, dict) or "per_task" not in result or "instruction_following" not in result:
        raise ConfigError(f"{path}: not a result.json of mtbi_score (no per_task / instruction_following)")
    return result


def load_per_item(result_path: Path) -> list[dict] | None:
    """The ``per_item.jsonl`` beside a ``result.json`` (None when absent)."""
    path = result_path.with_name("per_item.jsonl")
    return read_targets(path) if path.is_file() else None


def training_time(result_path: Path) -> str | None:
    """The training time of the model a ``result.json`` scores: ``train_time.json`` of the training
    run, the nearest directory above it with a ``config.yaml`` (None when there is none)."""
    for parent in result_path.resolve().parents:
        if (parent / "config.yaml").is_file():
            info = read_train_time(parent)
            return describe_train_time(info) if info else None
    return None


def difference_cell(base: list[dict] | None, other: list[dict] | None) -> str | None:
    """``+5.00 (+1.25 to +8.75)``: unseen-task accuracy of ``other`` minus ``base``, 95% interval."""
    d = paired_accuracy_difference(base, other) if base is not None and other is not None else None
    if d is None:
        return None
    ci = d["ci95"]
    return f"{d['difference']:+.2f}" + (f" ({ci[0]:+.2f} to {ci[1]:+.2f})" if ci else "")


def task_columns(results: list[dict]) -> tuple[list[str], list[str]]:
    """Seen and unseen answer tasks (not transcription tasks), in order of first appearance."""
    seen: dict[str, None] = {}
    unseen: dict[str, None] = {}
    for result in results:
        for task, g in result["per_task"].items():
            if g.get("answer_task") not in TRANSCRIPTION_ANSWER_TASKS:
                (seen if g.get("task_split") == "train" else unseen)[task] = None
    return list(seen), list(unseen)


def _get(d: dict | None, *keys: str) -> object:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def system_row(label: str, result: dict, seen: list[str], unseen: list[str], metric: str,
               differences: list[str | None]) -> list[object]:
    """The cells of one speech system (the order of :func:`header`); ``differences``: its
    :func:`difference_cell` against each reference system."""
    pg, tg, counts = result["prompt_generalization"], result["task_generalization"], result["counts"]
    return ([label, _get(pg, "seen_wordings", "wer"), _get(pg, "unseen_wordings", "wer"),
             _get(pg, "seen_wordings", "agreement"), _get(pg, "unseen_wordings", "agreement"),
             result["instruction_following"]["rate"]]
            + [_get(result["per_task"], t, metric) for t in seen] + [_get(tg, "seen_tasks", metric)]
            + [_get(result["per_task"], t, metric) for t in unseen] + [_get(tg, "unseen_tasks", metric)]
            + [format_interval(_get(tg, "unseen_tasks", "accuracy_ci95"))] + differences
            + [_get(tg, "unseen_tasks", "grounding")]
            + [counts.get(k) for k in ("empty", "looping", "cut", "refusal")] + [result.get("num_items")])


def llm_row(label: str, result: dict, seen: list[str], unseen: list[str], metric: str,
            n_references: int) -> list[object]:
    """The text LLM's own answers (``result["llm"]``): no agreement or instruction following."""
    llm = result.get("llm") or {}
    pg, overall = llm.get("prompt_generalization"), llm.get("overall") or {}
    per_task = llm.get("per_task") or {} if metric == "accuracy" else {}
    return ([label, _get(pg, "seen_wordings", "wer"), _get(pg, "unseen_wordings", "wer"), None, None, None]
            + [_get(per_task, t, metric) for t in seen] + [_get(llm, "seen_tasks", metric) if per_task else None]
            + [_get(per_task, t, metric) for t in unseen] + [_get(llm, "unseen_tasks", metric) if per_task else None]
            + [None] * (n_references + 2)
            + [overall.get("num_empty"), overall.get("num_looping"), overall.get("num_cut"),
               overall.get("num_refusal"), result.get("num_items")])


def header(seen: list[str], unseen: list[str], metric: str, references: list[str]) -> list[str]:
    short = METRICS[metric]
    return (["system", "WER seen prompts", "WER unseen prompts", "agr. seen prompts", "agr. unseen prompts",
             "instr. following"] + [f"seen: {t}" for t in seen] + [f"seen tasks {short}"]
            + [f"unseen: {t}" for t in unseen] + [f"unseen tasks {short}", "unseen acc. 95% CI"]
            + [f"unseen acc. vs {cell(r)} (95% CI)" for r in references] + ["grounded unseen"]
            + ["#empty", "#looping", "#cut", "#refusal", "#examples"])


def markdown_table(head: list[str], rows: list[list[object]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return out + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def reference_indices(labels: list[str], references: list[str]) -> list[int]:
    """The rows of the ``--reference`` labels (default: the first system); a clear error for an
    unknown label."""
    indices = []
    for ref in references or [labels[0]]:
        if ref not in labels:
            raise ConfigError(f"--reference {ref!r}: no system with that label (labels: {', '.join(labels)})")
        indices.append(labels.index(ref))
    return indices


def build_section(title: str, systems: list[tuple[str, Path]], results: list[dict], metric: str,
                  llm_label: str | None, header_lines: list[str], references: list[str] = ()) -> str:
    """The markdown section: heading, header lines, table, sources and notes. ``references``: the
    labels of the systems the others are compared with (default: the first system)."""
    seen, unseen = task_columns(results)
    labels = [label for label, _ in systems]
    refs = reference_indices(labels, list(references))
    per_item = [load_per_item(path) for _, path in systems]
    rows = [system_row(label, r, seen, unseen, metric,
                       [difference_cell(per_item[j], items) if j != i else None for j in refs])
            for i, ((label, _), r, items) in enumerate(zip(systems, results, per_item))]
    if llm_label:
        rows.append(llm_row(llm_label, results[0], seen, unseen, metric, len(refs)))
    out = [f"## {title}", ""] + [f"- {h}" for h in header_lines if h] + [""]
    out += markdown_table(header(seen, unseen, metric, [labels[j] for j in refs]), rows)
    out += ["", "Sources:"]
    for (label, path), r in zip(systems, results):
        trained = training_time(path)
        out.append(f"- {cell(label)}: `{path}` (data set {cell(r.get('data_set'))}, {cell(r.get('num_items'))} "
                   f"examples, commit {cell(r.get('commit'))}" + (f"; model: {trained}" if trained else "") + ")")
        c = r.get("counts", {})
        if c.get("missing") or c.get("extra"):
            out.append(f"  - {c.get('missing')} examples without output (scored as wrong), "
                       f"{c.get('extra')} outputs without target")
    if len({(r.get("data_set"), r.get("num_items")) for r in results}) > 1:
        out.append("- **The systems were scored on different targets** (data set / number of examples differ).")
    per_task = "accuracy against the true answer" if metric == "accuracy" else "agreement with the text LLM"
    llm_note = f" {cell(llm_label)}: the text LLM's own answers given the transcripts." if llm_label else ""
    out += ["", f"Rates in percent; `{MISSING}`: not applicable. WER: the transcription tasks among the seen "
                "tasks, against the transcript; agr.: the same answer as the text LLM given the transcript; "
                f"instr. following: answers that are no transcription and have the form of the LLM's answer; "
                f"grounded unseen: on the unseen tasks' extractive examples (the LLM answered with words of the "
                f"transcript), outputs made of words of the transcript too; unseen acc. 95% CI: bootstrap over "
                "utterances; unseen acc. vs X: the difference to system X on the same examples, with "
                "the interval of a paired bootstrap over utterances; "
                f"per-task columns: {per_task}.{llm_note}",
            "Definitions in docs/mtbi.md; every number comes from a `result.json` of "
            "`speechllm.bin.mtbi_score`."]
    return "\n".join(out) + "\n"


def put_section(path: Path, title: str, section: str) -> str:
    """Replace (or append) the section of ``title`` in ``path``; returns the file's new text."""
    begin, end = f"<!-- mtbi_table begin: {title} -->", f"<!-- mtbi_table end: {title} -->"
    block = f"{begin}\n{section}{end}\n"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + ("\n\n" if text.strip() else "") + block
    atomic_write_text(path, text)
    return text


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    """Collect the systems' result.json files into the RESULTS.md section; 1 on bad input."""
    argv = sys.argv[1:] if argv is None else argv
    args = get_parser().parse_args(argv)
    setup_logging()
    systems = [split_system(s) for s in args.system]
    if args.systems:
        systems += systems_from_yaml(args.systems)
    if not systems:
        raise ConfigError("no systems: give --system LABEL=RESULT_JSON or --systems FILE")
    results = [load_result(path) for _, path in systems]
    lines = [f"Written: {datetime.datetime.now().isoformat(timespec='seconds')}, "
             f"commit {git_commit(Path(__file__).parent)}",
             f"Command: `python -m speechllm.bin.mtbi_table {shlex.join(argv)}`"]
    if args.stage_times and args.stage_times.is_file():
        lines += stage_time_lines(args.stage_times)
    elif args.stage_times:
        log.warning("no stage times file %s; run time not reported", args.stage_times)
    section = build_section(args.section, systems, results, args.metric, args.llm_row, lines + args.header,
                            args.reference)
    put_section(args.out, args.section, section)
    log.info("wrote section '%s' of %s (%d systems)", args.section, args.out, len(systems))
    return 0


if __name__ == "__main__":
    sys.exit(main())
