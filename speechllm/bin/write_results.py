"""Collect every scored decoding under an exp dir into RESULTS.md.

    python -m speechllm.bin.write_results --exp_dir exp --out RESULTS.md \
        --stage_times exp/stage_times.tsv --recipe "$(pwd)" --header "machine: 2 CPU cores"

Rows come from ``exp/*/decode_*/<set>/score/result.json`` (or ``decode_*/score/result.json``)
and the ``decode_info.yaml`` beside each score dir; see :mod:`speechllm.scoring.results`.
"""
from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
from pathlib import Path

from speechllm.scoring.results import collect_rows, stage_time_lines, write_results_md
from speechllm.utils.git import git_commit
from speechllm.utils.logging_utils import setup_logging
from speechllm.utils.machine import cpu_model

log = logging.getLogger(__name__)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_dir", nargs="+", default=["exp"],
                   help="searched recursively for score/result.json; more than one dir puts rows of "
                        "another recipe (e.g. ../asr1/exp, a baseline) in the same table")
    p.add_argument("--out", default="RESULTS.md")
    p.add_argument("--title", default=None, help="heading; default 'RESULTS: <recipe dir name>'")
    p.add_argument("--header", action="append", default=[],
                   help="a free line above the table (repeatable), e.g. total run time")
    p.add_argument("--stage_times", default=None,
                   help="the template's stage_times.tsv; adds a total/per-stage run time line")
    p.add_argument("--recipe", default=None, help="recipe directory, named in the header")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    header = []
    if args.recipe:
        recipe = Path(args.recipe).resolve()
        header.append(f"Recipe: {'/'.join(recipe.parts[-3:])}")
    header.append(f"Written: {datetime.datetime.now().isoformat(timespec='seconds')}, "
                  f"commit {git_commit(Path(__file__).parent)}, {os.cpu_count()} CPU cores visible ({cpu_model()})")
    if args.stage_times:
        if Path(args.stage_times).is_file():
            header += stage_time_lines(args.stage_times)
        else:
            log.warning("no stage times file %s; run time not reported", args.stage_times)
    header += args.header
    rows = [row for exp_dir in args.exp_dir for row in collect_rows(exp_dir)]
    if not rows:
        log.warning("no score/result.json under %s", args.exp_dir)
    if args.title:
        title = args.title
    elif args.recipe:
        recipe = Path(args.recipe).resolve()
        title = f"RESULTS: {recipe.parent.name}/{recipe.name}"
    else:
        title = "RESULTS"
    write_results_md(rows, args.out, title=title, header_lines=header)
    log.info("wrote %s (%d rows)", args.out, len(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
