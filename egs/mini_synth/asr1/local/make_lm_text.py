#!/usr/bin/env python3
"""Training text of the external LM (stage 5b): every KJV verse but those of the speech test sets.

    local/make_lm_text.py --exclude data/dev/text data/test/text --out data/local/lm_train.txt

Writes ``OUT`` in the Kaldi ``text`` format that ``speechllm.bin.train --task lm --train_text``
reads, one verse a line in Bible order, its id the verse (``Gen001_001 in the beginning god
created the heaven and the earth``), normalized like the transcripts (``Verse.transcript``:
``speechllm.text.normalizer.normalize_text``). The verses of the ``--exclude`` files (Kaldi
``text`` of the dev/test sets; a verse is named by the end of an utterance id or by an identical
transcript, :func:`speechllm.corpus.kjv_text.read_exclusions`) are left out, counted per file.
``OUT`` with ``.info.yaml`` appended records the counts and a digest of the inputs; a second run
with the same inputs does nothing.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from pathlib import Path

import yaml

from speechllm.corpus.kjv_text import WHOLE_BIBLE, dump_kjv, read_exclusions
from speechllm.utils.config import atomic_write_text
from speechllm.utils.logging_utils import setup_logging

log = logging.getLogger("make_lm_text")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exclude", nargs="*", default=[], help="Kaldi text files whose verses are withheld")
    p.add_argument("--out", default="data/local/lm_train.txt")
    p.add_argument("--bible_cmd", default="bible")
    return p


def inputs_digest(exclude: list[str], bible_cmd: str) -> str:
    h = hashlib.sha1(bible_cmd.encode())
    for path in sorted(exclude):
        h.update(path.encode() + b"\0" + Path(path).read_bytes())
    return h.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    out, info_path = Path(args.out), Path(args.out + ".info.yaml")
    missing = [p for p in args.exclude if not Path(p).is_file()]
    if missing:
        log.error("exclusion file(s) not found: %s", " ".join(missing))
        return 1
    digest = inputs_digest(args.exclude, args.bible_cmd)
    if out.is_file() and info_path.is_file() and yaml.safe_load(info_path.read_text()).get("digest") == digest:
        log.info("skip: %s already made from these exclusion files (see %s)", out, info_path)
        return 0
    verses = dump_kjv(WHOLE_BIBLE, bible_cmd=args.bible_cmd)
    withheld: set[str] = set()
    per_file = {}
    for path in args.exclude:
        ids, stats = read_exclusions([path], verses)
        per_file[path] = {"verses": len(ids), **stats}
        log.info("%s: %d verses withheld (%d of %d lines matched a verse)", path, len(ids),
                 stats.get("matched", 0), stats.get("lines", 0))
        withheld |= ids
    kept = [v for v in verses if v.id_part not in withheld]
    atomic_write_text(out, "".join(f"{v.id_part} {v.transcript}\n" for v in kept))
    words = sum(len(v.words) for v in kept)
    log.info("wrote %s: %s of %s KJV verses (%s words); %d withheld", out, f"{len(kept):,}", f"{len(verses):,}",
             f"{words:,}", len(verses) - len(kept))
    info = {"digest": digest, "verses": len(verses), "kept": len(kept), "withheld": len(verses) - len(kept),
            "words": words, "exclude": per_file}
    atomic_write_text(info_path, yaml.safe_dump(info, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
