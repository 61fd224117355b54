"""MTBI behavior-imitation targets: the frozen LLM's answers to task prompts about transcripts.

For each utterance of a data dir's ``text`` some (task, wording) pairs of a prompt set
(:mod:`speechllm.llm.text_tasks`) are drawn; the frozen LLM gets the wording with ``{text}``
replaced by the transcript (its chat template, an optional system prompt) and answers greedily.
The speech LLM later learns to give the same answer with the audio in place of ``{text}``.
``docs/mtbi.md`` describes the stage; ``speechllm.bin.mtbi_make_targets`` runs it.

One JSONL line per (utterance, wording)::

    {"id": "<utt>|<task>/<wid>", "utt_id", "task", "answer_task", "wording": "<task>/<wid>",
     "wording_split", "task_split", "prompt" (wording text with {text}), "transcript",
     "response", "reference" (TEXT_TASKS answer or null), "stopped" (ended at a stop token)}

Beside it ``<out>.meta.json`` holds the provenance (:func:`provenance`). A run appends and
flushes after every batch; a run with the same provenance resumes (ids already written are
skipped, a truncated last line is dropped); once every pair is written the file is rewritten in
plan order (utterances in ``text`` order, each one's pairs in draw order), so an interrupted and
resumed run ends with the same file as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from speechllm.data.datadir import DataDirError
from speechllm.llm.text_tasks import (PLACEHOLDER, TEXT_TASKS, PromptSet, PromptTask, TaskContext, TaskUnavailable,
                                      Wording)
from speechllm.utils.config import ConfigError, atomic_write_text

logger = logging.getLogger(__name__)

FORMAT = "mtbi_targets/1"
SPLIT_CHOICES = ("train", "heldout", "all")
# Provenance keys that say where lines came from but may differ between a run and its resume.
NOT_COMPARED = ("prompts", "text", "run")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")
SAMPLE_BYTES = 1 << 20  # weights files: size + sha256 of the first and last MiB


# ----------------------------------------------------------------------------------------
# Which (utterance, wording) pairs
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TargetPair:
    """One prompt to the frozen LLM: an utterance's transcript in one wording of one task."""

    utt_id: str
    transcript: str
    wording: Wording
    task: PromptTask

    @property
    def id(self) -> str:
        return f"{self.utt_id}|{self.wording.id}"

    def user_content(self) -> str:
        return self.wording.render(self.transcript)


def eligible_wordings(prompts: PromptSet, splits: str, tasks: Iterable[str] | None = None,
                      exclude_tasks: Iterable[str] | None = None) -> dict[str, list[Wording]]:
    """``{task: wordings}`` that a run over ``splits`` may use, tasks in file order.

    ``train``: wordings of split train of tasks of split train; ``heldout``: the others; ``all``:
    every wording. ``tasks`` keeps only those tasks, ``exclude_tasks`` drops some (ablations).
    """
    if splits not in SPLIT_CHOICES:
        raise ConfigError(f"splits: choose one of {list(SPLIT_CHOICES)}, got {splits!r}")
    wanted, excluded = list(tasks or []), set(exclude_tasks or [])
    unknown = sorted((set(wanted) | excluded) - set(prompts.tasks))
    if unknown:
        raise ConfigError(f"{prompts.path}: no task(s) {unknown}; tasks: {list(prompts.tasks)}")
    out: dict[str, list[Wording]] = {}
    for name, task in prompts.tasks.items():
        if (wanted and name not in wanted) or name in excluded:
            continue
        if splits == "train" and task.split != "train":
            if name in wanted:
                raise ConfigError(f"{prompts.path}: task '{name}' is held out; --splits train never uses it")
            continue
        chosen = [w for w in task.wordings if splits == "all" or w.split == splits]
        if chosen:
            out[name] = chosen
    if not out:
        raise ConfigError(f"{prompts.path}: no wordings left for splits={splits} "
                          f"(tasks={wanted or 'all'}, exclude_tasks={sorted(excluded)})")
    return out


def draw_wordings(utt_id: str, eligible: dict[str, list[Wording]], per_utt: int | None, seed: int) -> list[Wording]:
    """The wordings one utterance gets: all of them (``per_utt`` None) or ``per_utt`` distinct ones.

    The draw depends only on ``(seed, utt_id)`` and ``eligible``, not on other utterances, jobs or
    batches. Tasks come in a random order, each with a random wording; past the number of tasks a
    second round gives each task another wording, and so on (tasks stay balanced).
    """
    if per_utt is None:
        return [w for ws in eligible.values() for w in ws]
    rng = random.Random(f"mtbi-targets|{seed}|{utt_id}")  # str seeds hash with sha512: stable across runs
    order = list(eligible)
    rng.shuffle(order)
    shuffled = {t: rng.sample(ws, len(ws)) for t, ws in eligible.items()}
    rounds = max(len(ws) for ws in eligible.values())
    drawn = [shuffled[t][r] for r in range(rounds) for t in order if r < len(shuffled[t])]
    return drawn[:per_utt]


def plan_pairs(text: dict[str, str], prompts: PromptSet, eligible: dict[str, list[Wording]],
               per_utt: int | None, seed: int) -> list[TargetPair]:
    """Every pair of the run in plan order; utterances with empty text are skipped (logged)."""
    pairs, empty = [], 0
    for utt, transcript in text.items():
        if not transcript.strip():
            empty += 1
            continue
        pairs += [TargetPair(utt, transcript, w, prompts.tasks[w.task])
                  for w in draw_wordings(utt, eligible, per_utt, seed)]
    if empty:
        logger.warning("skipped %d of %d utterances with empty text", empty, len(text))
    return pairs


def reference_answer(task: PromptTask, transcript: str) -> str | None:
    """The true answer when the task's ``answer`` is a TEXT_TASKS function computable from the
    transcript alone (``continue``/``source_book`` need more, tasks without ``answer`` have none)."""
    fn = TEXT_TASKS.get(task.answer) if task.answer else None
    if fn is None:
        return None
    try:
        return fn(transcript, TaskContext())
    except TaskUnavailable:
        return None


def make_record(pair: TargetPair, response: str, stopped: bool) -> dict[str, Any]:
    """The JSONL object of one answered pair (the module docstring lists the fields)."""
    return {"id": pair.id, "utt_id": pair.utt_id, "task": pair.task.name, "answer_task": pair.task.answer,
            "wording": pair.wording.id, "wording_split": pair.wording.split, "task_split": pair.task.split,
            "prompt": pair.wording.text, "transcript": pair.transcript, "response": response,
            "reference": reference_answer(pair.task, pair.transcript), "stopped": bool(stopped)}


def max_new_tokens_for(transcript: str, base: int, per_word: float) -> int:
    """The answer's token bound: ``base + per_word * words of the transcript``."""
    return int(base + per_word * len(transcript.split()))


# ----------------------------------------------------------------------------------------
# Provenance
# ----------------------------------------------------------------------------------------
def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(SAMPLE_BYTES), b""):
            h.update(block)
    return h.hexdigest()


def _sampled_sha256(path: Path) -> str:
    """sha256 of a large file's size, first and last MiB (weights: hashing all of 15 GB is too slow)."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(SAMPLE_BYTES))
        f.seek(max(size - SAMPLE_BYTES, 0))
        h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


def llm_fingerprint(name_or_path: str, model: Any = None) -> str:
    """A directory: sha256 over its files (small ones whole: config, tokenizer, chat template;
    weights by size, first and last MiB). A hub id: the hub commit the loaded config came from."""
    root = Path(name_or_path)
    if root.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")):
            large = f.suffix in WEIGHT_SUFFIXES or f.stat().st_size > 64 * SAMPLE_BYTES
            h.update(f"{f.name}:{_sampled_sha256(f) if large else file_sha256(f)}\n".encode())
        return f"dir-sha256:{h.hexdigest()}"
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    return f"hub:{name_or_path}@{commit or 'unknown'}"


def provenance(*, llm: str, llm_fingerprint: str, prompts: str, text: str, splits: str, tasks: list[str],
               per_utt: int | None, seed: int, system_prompt: str | None, dtype: str, max_new_tokens_base: int,
               max_new_tokens_per_word: float, job: tuple[int, int] | None, run: dict) -> dict[str, Any]:
    """The ``<out>.meta.json`` content. Keys outside :data:`NOT_COMPARED` must match for a resume
    (or a merge of job files, ``job`` aside); ``run`` records the code version, device, batch size."""
    meta = {"format": FORMAT, "llm": llm, "llm_fingerprint": llm_fingerprint,
            "prompts": str(prompts), "prompts_sha256": file_sha256(prompts),
            "text": str(text), "text_sha256": file_sha256(text),
            "splits": splits, "tasks": list(tasks), "per_utt": "all" if per_utt is None else int(per_utt),
            "seed": int(seed), "system_prompt": system_prompt,
            "decoding": {"mode": "greedy", "dtype": dtype, "max_new_tokens_base": int(max_new_tokens_base),
                         "max_new_tokens_per_word": float(max_new_tokens_per_word)},
            "run": run}
    if job is not None:
        meta["job"] = list(job)
    return meta


def run_info(**extra: Any) -> dict[str, Any]:
    """``run`` of the provenance: package version, git commit, start time and ``extra``."""
    import speechllm
    from speechllm.utils.git import git_commit

    return {"speechllm_version": speechllm.__version__, "git_commit": git_commit(Path(__file__).parent),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}


def meta_path(out: str | os.PathLike) -> Path:
    return Path(f"{out}.meta.json")


def provenance_diff(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """``"key: old -> new"`` for every compared key that differs."""
    keys = sorted((set(old) | set(new)) - set(NOT_COMPARED) - set(ignore))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


# ----------------------------------------------------------------------------------------
# The targets file
# ----------------------------------------------------------------------------------------
def read_targets(path: str | os.PathLike, required: Iterable[str] = ("id",), repair: bool = False,
                 allow_empty: bool = True) -> list[dict]:
    """The records of a targets JSONL, checked: JSON objects with the ``required`` keys, an ``id``
    without white space used once, a ``prompt`` (where there is one) holding ``{text}`` once.
    Blank lines are skipped. Errors are :class:`DataDirError` naming ``file:line``; a file
    without records is one unless ``allow_empty`` (a run that wrote nothing yet).

    A last line without its newline (a killed run) is an error, or with ``repair`` dropped from
    the file with a warning (resuming a run).
    """
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    if tail:
        if not repair:
            raise DataDirError(path, len(lines) + 1, "truncated last line (a run was killed; "
                                                     "run the stage again to resume)")
        logger.warning("%s:%d: dropped a truncated last line (%d bytes) left by a killed run",
                       path, len(lines) + 1, len(tail))
        with path.open("r+b") as f:
            f.truncate(len(data) - len(tail))
    required = tuple(required)
    records, first_line = [], {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataDirError(path, lineno, f"invalid JSON: {getattr(e, 'msg', e)}") from None
        if not isinstance(rec, dict):
            raise DataDirError(path, lineno, "expected a JSON object")
        missing = [k for k in required if k not in rec]
        if missing:
            raise DataDirError(path, lineno, f"missing key(s) {missing}")
        ex_id = rec.get("id")
        if not isinstance(ex_id, str) or not ex_id or ex_id.split() != [ex_id]:
            raise DataDirError(path, lineno, f"'id' must be a string without white space, got {ex_id!r}")
        if ex_id in first_line:
            raise DataDirError(path, lineno, f"id '{ex_id}' already used on line {first_line[ex_id]}")
        first_line[ex_id] = lineno
        if "prompt" in rec and (not isinstance(rec["prompt"], str) or rec["prompt"].count(PLACEHOLDER) != 1):
            raise DataDirError(path, lineno, f"'prompt' must hold {PLACEHOLDER} once, got {rec['prompt']!r}")
        records.append(rec)
    if not records and not allow_empty:
        raise DataDirError(path, None, "no examples")
    return records


def open_targets(out: Path, meta: dict, overwrite: bool) -> dict[str, dict]:
    """Prepare ``out`` for a run with provenance ``meta``: ``{id: record}`` already written.

    A new file gets its ``.meta.json``; an existing one must carry the same provenance
    (ConfigError listing the differences otherwise) unless ``overwrite`` starts it again.
    """
    mpath = meta_path(out)
    if overwrite:
        for p in (out, mpath):
            p.unlink(missing_ok=True)
    if mpath.is_file():
        old = json.loads(mpath.read_text(encoding="utf-8"))
        diff = provenance_diff(old, meta)
        if diff:
            raise ConfigError(f"{out}: made with other settings ({'; '.join(diff)}); use another output "
                              f"file, or --overwrite to start again")
        if old.get("run", {}).get("git_commit") != meta["run"]["git_commit"]:
            logger.warning("%s: started at commit %s, resumed at %s", out, old.get("run", {}).get("git_commit"),
                           meta["run"]["git_commit"])
    elif out.exists():
        raise ConfigError(f"{out}: exists without {mpath.name} (provenance unknown); --overwrite to start again")
    else:
        atomic_write_text(mpath, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return {rec["id"]: rec for rec in (read_targets(out, repair=True) if out.is_file() else [])}


def finalize(out: Path, pairs: list[TargetPair], records: dict[str, dict]) -> list[dict]:
    """Rewrite ``out`` in plan order once every pair is written; mark the meta complete."""
    unknown = sorted(set(records) - {p.id for p in pairs})
    if unknown:
        raise ConfigError(f"{out}: id {unknown[0]} is not in this run's plan ({len(unknown)} such)")
    ordered = [records[p.id] for p in pairs]
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered))
    mpath = meta_path(out)
    meta = json.loads(mpath.read_text(encoding="utf-8"))
    meta["run"]["complete"] = True
    meta["run"]["pairs"] = len(ordered)
    atomic_write_text(mpath, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return ordered


def job_path(out: str | os.PathLike, job: int) -> Path:
    return Path(f"{out}.{job}")


def combine_jobs(out: str | os.PathLike, nj: int) -> list[dict]:
    """Concatenate the complete job files ``out.1 .. out.NJ`` into ``out`` (+ ``out.meta.json``).

    Jobs hold contiguous shares of the utterances in ``text`` order, so the result equals the file
    of a single-process run. Job files must agree on every compared provenance key but ``job``.
    """
    metas, records = [], []
    for j in range(1, nj + 1):
        mpath = meta_path(job_path(out, j))
        if not mpath.is_file():
            raise FileNotFoundError(f"{mpath}: job {j} of {nj} has not started")
        meta = json.loads(mpath.read_text(encoding="utf-8"))
        if not meta.get("run", {}).get("complete"):
            raise ConfigError(f"{job_path(out, j)}: job {j} of {nj} is not complete; run it again to finish")
        if meta.get("job") != [j, nj]:
            raise ConfigError(f"{mpath}: made as job {meta.get('job')}, expected [{j}, {nj}]")
        diff = provenance_diff(metas[0], meta, ignore=("job",)) if metas else []
        if diff:
            raise ConfigError(f"{mpath}: other settings than job 1 ({'; '.join(diff)})")
        metas.append(meta)
        records += read_targets(job_path(out, j))
    merged = {k: v for k, v in metas[0].items() if k != "job"}
    merged["run"] = {**metas[0]["run"], "combined_jobs": nj, "pairs": len(records), "complete": True}
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    atomic_write_text(meta_path(out), json.dumps(merged, indent=2, ensure_ascii=False) + "\n")
    logger.info("combined %d jobs: %d pairs into %s", nj, len(records), out)
    return records


# ----------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------
GenerateFn = Callable[[list[str], list[int]], list[tuple[str, int, bool]]]


def generate_targets(pairs: list[TargetPair], out: Path, done: dict[str, dict], generate: GenerateFn,
                     render: Callable[[str], str], batch_size: int, base: int, per_word: float) -> dict[str, dict]:
    """Answer the pairs not in ``done`` and append them to ``out``, flushed after every batch;
    returns ``done`` with the new records. ``generate(prompts, bounds)`` gives ``(text, new_tokens,
    stopped)`` per rendered prompt; ``render`` applies the chat template.

    Batches are cut from all pairs, shortest prompts first, whether done or not; a batch with any
    pair missing is generated whole. A resumed run thus generates every answer in the same batch
    as an uninterrupted run with the same ``batch_size`` (padding changes the numbers slightly, so
    another batch can flip a near tie of greedy search).
    """
    order = sorted(pairs, key=lambda p: len(p.user_content()))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    todo = [b for b in batches if any(p.id not in done for p in b)]
    logger.info("%d of %d pairs already in %s; %d batches of %d to generate", len(done), len(pairs), out,
                len(todo), batch_size)
    start, tokens, answered = time.perf_counter(), 0, 0
    with out.open("a", encoding="utf-8") as f:
        for k, batch in enumerate(todo, start=1):
            bounds = [max_new_tokens_for(p.transcript, base, per_word) for p in batch]
            answers = generate([render(p.user_content()) for p in batch], bounds)
            for p, (text, n, stopped) in zip(batch, answers):
                tokens, answered = tokens + n, answered + 1
                if p.id not in done:
                    done[p.id] = make_record(p, text, stopped)
                    f.write(json.dumps(done[p.id], ensure_ascii=False) + "\n")
            f.flush()
            if k % 50 == 0:
                logger.info("%d of %d batches generated", k, len(todo))
    elapsed = time.perf_counter() - start
    if todo:
        logger.info("generated %d answers (%d new tokens) in %.1f s: %.1f answers/s, %.1f tokens/s",
                    answered, tokens, elapsed, answered / max(elapsed, 1e-9), tokens / max(elapsed, 1e-9))
    return done


# ----------------------------------------------------------------------------------------
# Checks and counts
# ----------------------------------------------------------------------------------------
def check_split_leaks(records: Iterable[dict], prompts: PromptSet, where: str = "targets") -> None:
    """Refuse (ConfigError naming the id) a record that a training file must not hold: a wording
    not in ``prompts``, or a held-out wording or task (by ``prompts`` or by the record itself)."""
    wordings = {w.id: w for w in prompts.wordings()}
    for rec in records:
        w = wordings.get(rec.get("wording"))
        if w is None:
            raise ConfigError(f"{where}: {rec['id']}: wording {rec.get('wording')!r} is not in {prompts.path}")
        if prompts.tasks[w.task].split != "train" or rec.get("task_split") != "train":
            raise ConfigError(f"{where}: {rec['id']}: held-out task '{w.task}' in a training targets file")
        if w.split != "train" or rec.get("wording_split") != "train":
            raise ConfigError(f"{where}: {rec['id']}: held-out wording '{w.id}' in a training targets file")


def check_targets_file(path: str | os.PathLike, prompts: PromptSet) -> list[dict]:
    """The records of a complete targets file; one made with ``splits: train`` is checked with
    :func:`check_split_leaks` against ``prompts`` (the current prompt file is the authority)."""
    mpath = meta_path(path)
    if not mpath.is_file():
        raise FileNotFoundError(f"{mpath}: targets without provenance")
    meta = json.loads(mpath.read_text(encoding="utf-8"))
    if not meta.get("run", {}).get("complete"):
        raise ConfigError(f"{path}: incomplete (the run stopped early; run it again to resume)")
    records = read_targets(path)
    if meta.get("splits") == "train":
        check_split_leaks(records, prompts, str(path))
    return records


def log_counts(records: list[dict]) -> dict[str, dict[str, int]]:
    """Log and return ``{task: {pairs, empty, cut}}`` plus the totals under ``"all"``."""
    counts: dict[str, Counter] = {}
    for rec in records:
        for key in (rec["task"], "all"):
            c = counts.setdefault(key, Counter())
            c["pairs"] += 1
            c["empty"] += not rec["response"].strip()
            c["cut"] += not rec["stopped"]
    utts = len({rec["utt_id"] for rec in records})
    total = counts.get("all", Counter())
    logger.info("%d pairs of %d utterances; %d empty answers, %d cut at the length bound",
                total["pairs"], utts, total["empty"], total["cut"])
    for task in sorted(k for k in counts if k != "all"):
        c = counts[task]
        logger.info("  %-20s %6d pairs, %5d empty, %5d cut", task, c["pairs"], c["empty"], c["cut"])
    return {k: dict(v) for k, v in counts.items()}
