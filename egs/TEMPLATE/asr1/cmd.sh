# Job launchers used by the stages. Pick one backend:
#   local : jobs run on this machine (tools/launch/run_local.sh)
#   slurm : jobs are submitted with sbatch as job arrays (tools/launch/run_slurm.sh)
cmd_backend=${cmd_backend:-local}
case "${cmd_backend}" in
    local)
        train_cmd="${MAIN_ROOT}/tools/launch/run_local.sh"
        decode_cmd="${MAIN_ROOT}/tools/launch/run_local.sh" ;;
    slurm)
        train_cmd="${MAIN_ROOT}/tools/launch/run_slurm.sh --mem 16G --time 48:00:00"
        decode_cmd="${MAIN_ROOT}/tools/launch/run_slurm.sh --mem 8G --time 12:00:00" ;;
    *)
        echo "cmd.sh: unknown cmd_backend '${cmd_backend}' (local or slurm)" >&2; return 1 ;;
esac
