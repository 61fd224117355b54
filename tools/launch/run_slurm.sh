#!/usr/bin/env bash
# Slurm job launcher with the same interface as run_local.sh:
#   run_slurm.sh [--gpu N] [--mem 8G] [--time 24:00:00] [--partition P] [--num_threads N] \
#                JOB=1:N log/name.JOB.log cmd args...
# Submits one sbatch job array (one task per JOB index), waits for it (sbatch --wait), and
# exits non-zero naming the failed task logs. Extra sbatch flags can go in $SLURM_EXTRA_ARGS.
set -uo pipefail
gpu=0; mem=""; time_limit=""; partition=""; num_threads=1
while [ $# -gt 0 ]; do
    case "$1" in
        --gpu) gpu=$2; shift 2 ;;
        --mem) mem=$2; shift 2 ;;
        --time) time_limit=$2; shift 2 ;;
        --partition) partition=$2; shift 2 ;;
        --num_threads) num_threads=$2; shift 2 ;;
        --max_jobs_run) shift 2 ;;
        *) break ;;
    esac
done
command -v sbatch >/dev/null || { echo "$0: sbatch not found; use run_local.sh in cmd.sh" >&2; exit 1; }
if [[ "$1" =~ ^([A-Za-z_]+)=([0-9]+):([0-9]+)$ ]]; then
    var=${BASH_REMATCH[1]}; start=${BASH_REMATCH[2]}; end=${BASH_REMATCH[3]}; shift
else
    var=JOB; start=1; end=1
fi
logtmpl=$1; shift
logdir=$(dirname "$logtmpl"); mkdir -p "$logdir/q"
script="$logdir/q/$(basename "${logtmpl//$var/array}" .log).sh"
{
    echo "#!/usr/bin/env bash"
    echo "cd $(pwd)"
    echo "[ -f ./path.sh ] && . ./path.sh"
    echo "$var=\$SLURM_ARRAY_TASK_ID"
    printf 'log=%q\n' "$logtmpl"; echo "log=\${log//$var/\$$var}"
    printf 'cmd=('; for a in "$@"; do printf '%q ' "$a"; done; echo ')'
    echo "args=(); for a in \"\${cmd[@]}\"; do args+=(\"\${a//$var/\$$var}\"); done"
    echo "{ echo \"# \${args[*]}\"; echo \"# started at \$(date) on \$(hostname)\"; \"\${args[@]}\"; rc=\$?; echo \"# ended at \$(date) with status \$rc\"; exit \$rc; } > \"\$log\" 2>&1"
} > "$script"
opts=(--array="${start}-${end}" --wait --cpus-per-task="$num_threads" -o "$logdir/q/slurm-%A_%a.out")
[ "$gpu" -gt 0 ] && opts+=(--gres="gpu:$gpu")
[ -n "$mem" ] && opts+=(--mem="$mem")
[ -n "$time_limit" ] && opts+=(--time="$time_limit")
[ -n "$partition" ] && opts+=(--partition="$partition")
# shellcheck disable=SC2086
sbatch "${opts[@]}" ${SLURM_EXTRA_ARGS:-} "$script"
rc=$?
if [ $rc -ne 0 ]; then
    echo "$0: job array failed (status $rc); see ${logtmpl//$var/*}" >&2
    exit 1
fi
