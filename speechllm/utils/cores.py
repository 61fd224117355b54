"""CPU core shares: several 1-node jobs side by side, each pinned to its own cores.

``python -m speechllm.utils.cores N`` prints the shares of this process's cores for N jobs, one
comma-separated list per line (a ``taskset -c`` argument), for the recipes' shell stages."""
from __future__ import annotations

import argparse
import os


def core_shares(jobs: int, cores: list[int] | None = None) -> list[list[int]]:
    """Split ``cores`` (default: the cores this process may run on) into contiguous shares whose
    sizes differ by at most one, one per job; with more jobs than cores, one share per core."""
    if jobs < 1:
        raise ValueError(f"core_shares: jobs must be >= 1, got {jobs}")
    cores = sorted(os.sched_getaffinity(0)) if cores is None else sorted(cores)
    n = min(jobs, len(cores))
    return [cores[j * len(cores) // n:(j + 1) * len(cores) // n] for j in range(n)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", type=int, help="number of jobs to run at once")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"jobs must be >= 1, got {args.jobs}")
    for share in core_shares(args.jobs):
        print(",".join(map(str, share)))


if __name__ == "__main__":
    main()
