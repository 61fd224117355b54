#!/usr/bin/env python3
"""Build the mini_synth corpus: KJV verses spoken by Debian TTS voices, with noise.

    local/make_corpus.py --data_dir data --audio_dir downloads/audio --nj 2 \
        --num_train 8000 --num_dev 150 --num_test 200 --seed 1

Writes ``data/{train,dev,test}`` (Kaldi data dirs), ``data/local/utt_info/*.tsv`` and
``data/local/corpus_info.yaml`` (sources, versions, voices, sizes, synthesis time). Does
nothing when ``corpus_info.yaml`` records the same settings and the data dirs are complete.
The reusable parts live in :mod:`speechllm.corpus`; this script holds the recipe's choices.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path

import yaml

from speechllm.corpus.kjv_text import DEFAULT_BOOKS, WHOLE_BIBLE, dump_kjv, filter_verses, select_verses
from speechllm.corpus.synth_corpus import (Conditions, plan_corpus, plan_digest, synthesize_corpus,
                                           write_data_dirs)
from speechllm.corpus.tts_voices import HELD_OUT_VOICES, VOICES, engine_versions, voice_available, voice_split
from speechllm.utils.config import atomic_write_text
from speechllm.utils.logging_utils import setup_logging

log = logging.getLogger("make_corpus")
SPLITS = ("train", "dev", "test")
DATA_FILES = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2dur")
DPKG_PACKAGES = ("bible-kjv", "bible-kjv-text", "espeak-ng", "espeak-ng-data", "festival",
                 "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts", "flite", "sox")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default="data")
    p.add_argument("--audio_dir", default="downloads/audio")
    p.add_argument("--nj", type=int, default=2, help="synthesis processes")
    # 8000 train utterances (~4.4 s each) = ~9.9 h of audio, synthesized in ~5.3 min on 2 cores.
    # The pool has ~3,800 verses (3,464 go to train), so each training verse is spoken 2-3 times
    # by different voices and conditions. Twice the 4000 of the first versions, at the same
    # training cost (conf/train.yaml: half the epochs): asr1 valid acc 0.836 (4000: 0.817, 0.815).
    p.add_argument("--num_train", type=int, default=8000)
    p.add_argument("--num_dev", type=int, default=150)
    p.add_argument("--num_test", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--books", default=",".join(DEFAULT_BOOKS), help="comma-separated bible book abbreviations")
    p.add_argument("--min_words", type=int, default=5)
    p.add_argument("--max_words", type=int, default=18)
    p.add_argument("--closed_vocab", type=lambda s: s.lower() in ("1", "true", "yes"), default=True,
                   help="test/dev verses use only words of the training text (true/false)")
    p.add_argument("--test_voices", default=",".join(HELD_OUT_VOICES),
                   help="comma-separated voice ids used only for test")
    p.add_argument("--max_fail_frac", type=float, default=0.01,
                   help="fail (exit 1) when more than this fraction of utterances cannot be synthesized")
    return p


def dpkg_versions(packages=DPKG_PACKAGES) -> dict[str, str]:
    """Installed Debian package versions (``not installed`` where dpkg knows none)."""
    out = {}
    for pkg in packages:
        try:
            proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
            out[pkg] = proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else "not installed"
        except OSError:
            out[pkg] = "unknown (no dpkg)"
    return out


def check_voices(voices: dict[str, list[str]]) -> None:
    """Exit with a clear message when a needed engine or voice is not installed."""
    missing = {v: why for vs in voices.values() for v in vs for ok, why in [voice_available(v)] if not ok}
    if missing:
        lines = "; ".join(f"{v}: {why}" for v, why in sorted(missing.items()))
        raise SystemExit(f"make_corpus: cannot synthesize {lines} (apt-get install espeak-ng festival "
                         "festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts flite sox, "
                         "or make install)")


def already_done(data_dir: Path, settings: dict) -> bool:
    info_path = data_dir / "local" / "corpus_info.yaml"
    if not info_path.is_file():
        return False
    info = yaml.safe_load(info_path.read_text(encoding="utf-8")) or {}
    complete = all((data_dir / s / f).is_file() for s in SPLITS for f in DATA_FILES)
    return complete and info.get("settings_digest") == settings_digest(settings)


def settings_digest(settings: dict) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def prepare_audio_dir(audio_dir: Path, digest: str) -> bool:
    """Reuse wavs only when they were made from the same plan; else remove the stale ones.

    Returns whether existing wavs may be reused.
    """
    stamp = audio_dir / "plan_digest"
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return True
    stale = [p for s in SPLITS for p in (audio_dir / s).glob("*.wav")]
    if stale:
        log.info("plan changed: removing %d wavs of an earlier plan from %s", len(stale), audio_dir)
        for p in stale:
            p.unlink()
    atomic_write_text(stamp, digest + "\n")
    return False


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    data_dir, audio_dir = Path(args.data_dir), Path(args.audio_dir)
    books = [b for b in args.books.split(",") if b]
    try:
        voices = voice_split([v for v in args.test_voices.split(",") if v])
    except KeyError as e:
        log.error("--test_voices: %s", e.args[0])
        return 1
    conditions = Conditions()
    settings = {
        "num_train": args.num_train, "num_dev": args.num_dev, "num_test": args.num_test,
        "seed": args.seed, "books": books, "min_words": args.min_words, "max_words": args.max_words,
        "closed_vocab": args.closed_vocab, "voices": voices, "conditions": dataclasses.asdict(conditions),
        "audio_dir": str(audio_dir.resolve()),
    }
    if already_done(data_dir, settings):
        log.info("skip: %s/{%s} already made with these settings (see %s/local/corpus_info.yaml)",
                 data_dir, ",".join(SPLITS), data_dir)
        return 0
    check_voices(voices)

    verses = dump_kjv(WHOLE_BIBLE)
    pool = filter_verses(verses, books, args.min_words, args.max_words)
    log.info("KJV: %d verses; %d in %s with %d-%d words", len(verses), len(pool), ",".join(books),
             args.min_words, args.max_words)
    split_verses, verse_stats = select_verses(pool, args.num_train, args.num_dev, args.num_test,
                                              args.seed, closed_vocab=args.closed_vocab)
    log.info("verses: %d train, %d dev, %d test (disjoint); train vocabulary %d words; "
             "test OOV %d of %d words", len(split_verses["train"]), len(split_verses["dev"]),
             len(split_verses["test"]), verse_stats["train_vocab_size"], verse_stats["test_oov_words"],
             verse_stats["test_words"])
    if args.closed_vocab and verse_stats["test_oov_words"] + verse_stats["dev_oov_words"]:
        log.warning("only %d closed-vocabulary verses outside train; dev/test have %d/%d words not in "
                    "the training text (more books or fewer train verses would avoid this)",
                    verse_stats["closed_vocab_candidates"], verse_stats["dev_oov_words"],
                    verse_stats["test_oov_words"])
    num_utts = {"train": args.num_train, "dev": args.num_dev, "test": args.num_test}
    plans = plan_corpus(split_verses, num_utts, voices, args.seed, conditions)
    digest = plan_digest(plans)
    reuse = prepare_audio_dir(audio_dir, digest)
    log.info("synthesizing %d utterances with %d voices in %d processes into %s",
             len(plans), len(VOICES), args.nj, audio_dir)
    statuses, timing = synthesize_corpus(plans, audio_dir, nj=args.nj, reuse_existing=reuse)

    failed = [st for st in statuses if st["error"]]
    fail_path = data_dir / "local" / "synthesis_failures.txt"
    atomic_write_text(fail_path, "".join(f"{st['utt_id']}\t{st['error']}\n" for st in failed))
    log.info("synthesis: %d of %d utterances ok, %d reused, %d failed (list in %s); %.1f s wall",
             len(statuses) - len(failed), len(statuses), timing["reused_utterances"], len(failed),
             fail_path, timing["wall_s"])
    for engine, e in timing["per_engine"].items():
        log.info("  %s: %d utterances, %.0f s of audio in %.0f s of synthesis (%.1f s audio per process-s)",
                 engine, e["utterances"], e["audio_s"], e["synth_s"], e["audio_s_per_process_s"] or 0)
    if len(failed) > args.max_fail_frac * len(statuses):
        log.error("%d of %d utterances failed (> %.1f%%), e.g. %s: %s", len(failed), len(statuses),
                  100 * args.max_fail_frac, failed[0]["utt_id"], failed[0]["error"])
        return 1

    sizes = write_data_dirs(plans, statuses, data_dir)
    for split, s in sizes.items():
        log.info("wrote %s/%s: %d utterances, %.2f h, %d voices", data_dir, split, s["utterances"],
                 s["hours"], len(s["voices"]))
    used = sorted({v for vs in voices.values() for v in vs})
    info = {
        "corpus": "mini_synth",
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "settings_digest": settings_digest(settings),
        "plan_digest": digest,
        "settings": settings,
        "sources": {
            "text": {"name": "King James Version of the Bible (1769 text)", "license": "public domain",
                     "command": f"bible -f {WHOLE_BIBLE}"},
            "debian_packages": dpkg_versions(),
            "engine_versions": engine_versions(),
        },
        "voices": {v: VOICES[v] for v in used},
        "voice_split": {**voices, "note": "test voices are held out of train and dev; dev uses training voices"},
        "verse_selection": {"books": books, "min_words": args.min_words, "max_words": args.max_words,
                            **verse_stats},
        "sizes": sizes,
        "synthesis": {**timing, "failed_utterances": len(failed), "failures_file": str(fail_path)},
    }
    info = json.loads(json.dumps(info))  # tuples -> lists, so that safe_dump accepts them
    atomic_write_text(data_dir / "local" / "corpus_info.yaml",
                      yaml.safe_dump(info, sort_keys=False, allow_unicode=True))
    log.info("wrote %s/local/corpus_info.yaml", data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
