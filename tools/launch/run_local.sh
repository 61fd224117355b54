#!/usr/bin/env bash
# Local job launcher (the "run.pl" of this toolkit).
#   run_local.sh [--max_jobs_run N] [--gpu N] [--mem X] [--time T] JOB=1:N log/name.JOB.log cmd args...
# Every JOB in the range runs "cmd args" with the string JOB replaced by its index, its output
# going to the log file. Exits non-zero, naming the failed logs, if any job fails.
# --gpu/--mem/--time are accepted so cmd.sh can switch backends without editing recipes.
set -uo pipefail
max_jobs_run=$(OMP_NUM_THREADS= nproc)  # nproc honours OMP_NUM_THREADS, which path.sh sets to 1
while [ $# -gt 0 ]; do
    case "$1" in
        --max_jobs_run) max_jobs_run=$2; shift 2 ;;
        --gpu|--mem|--time|--num_threads) shift 2 ;;
        *) break ;;
    esac
done
[ $# -ge 3 ] || { echo "usage: $0 [opts] JOB=1:N log/x.JOB.log cmd ..." >&2; exit 1; }
if [[ "$1" =~ ^([A-Za-z_]+)=([0-9]+):([0-9]+)$ ]]; then
    var=${BASH_REMATCH[1]}; start=${BASH_REMATCH[2]}; end=${BASH_REMATCH[3]}; shift
else
    var=JOB; start=1; end=1
fi
logtmpl=$1; shift
failed=()
pids=(); ids=()
for ((j = start; j <= end; j++)); do
    log=${logtmpl//$var/$j}
    mkdir -p "$(dirname "$log")"
    args=()
    for a in "$@"; do args+=("${a//$var/$j}"); done
    (
        echo "# ${args[*]}"
        echo "# started at $(date)"
        time "${args[@]}"
        rc=$?
        echo "# ended at $(date) with status $rc"
        exit $rc
    ) > "$log" 2>&1 &
    pids+=($!); ids+=($j)
    # Throttle: wait for the oldest job when the pool is full.
    if [ ${#pids[@]} -ge "$max_jobs_run" ]; then
        wait "${pids[0]}" || failed+=("${logtmpl//$var/${ids[0]}}")
        pids=("${pids[@]:1}"); ids=("${ids[@]:1}")
    fi
done
for k in "${!pids[@]}"; do
    wait "${pids[$k]}" || failed+=("${logtmpl//$var/${ids[$k]}}")
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "$0: ${#failed[@]} of $((end - start + 1)) jobs failed; see ${failed[*]}" >&2
    for f in "${failed[@]}"; do echo "---- tail of $f" >&2; tail -n 15 "$f" >&2; done
    exit 1
fi
exit 0
