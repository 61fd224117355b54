"""speechllm.utils.cores: the core shares of the parallel recipe jobs (MTBI --train_jobs, bench --jobs)."""
import os
import subprocess
import sys

import pytest

from speechllm.utils.cores import core_shares


@pytest.mark.parametrize("jobs, cores, expected", [
    (1, [0, 1, 2, 3], [[0, 1, 2, 3]]),
    (2, [0, 1, 2, 3], [[0, 1], [2, 3]]),
    (3, [0, 1, 2, 3, 4, 5, 6], [[0, 1], [2, 3], [4, 5, 6]]),
    (2, [5, 1, 3], [[1], [3, 5]]),           # sorted, contiguous in that order
    (4, [0, 1], [[0], [1]]),                  # never more shares than cores
])
def test_core_shares(jobs, cores, expected):
    shares = core_shares(jobs, cores)
    assert shares == expected
    assert sorted(c for s in shares for c in s) == sorted(cores)


def test_core_shares_default_is_affinity_and_rejects_zero_jobs():
    assert core_shares(1) == [sorted(os.sched_getaffinity(0))]
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        core_shares(0)


def test_cli_prints_one_taskset_list_per_job():
    cores = sorted(os.sched_getaffinity(0))
    out = subprocess.run([sys.executable, "-m", "speechllm.utils.cores", "2"], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == [",".join(map(str, s)) for s in core_shares(2, cores)]
    bad = subprocess.run([sys.executable, "-m", "speechllm.utils.cores", "0"], capture_output=True, text=True)
    assert bad.returncode != 0 and "jobs must be >= 1" in bad.stderr
