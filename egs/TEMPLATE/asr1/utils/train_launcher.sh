#!/usr/bin/env bash
# set_train_launcher: from ${ngpu} and ${ddp_cpu_procs}, set the training stages' process layout:
#   nproc_train  processes (GPUs, or CPU processes with gloo)
#   device       cpu or cuda
#   launcher     (python) or (torchrun --standalone --nproc_per_node N), an array
#   OMP_NUM_THREADS  the cores divided among the processes (exported)
set_train_launcher() {
    nproc_train=1; device=cpu
    [ "${ngpu}" -gt 0 ] && { nproc_train=${ngpu}; device=cuda; }
    [ "${ddp_cpu_procs}" -gt 1 ] && nproc_train=${ddp_cpu_procs}
    if [ "${nproc_train}" -gt 1 ]; then
        launcher=(torchrun --standalone --nproc_per_node "${nproc_train}")
    else
        launcher=(python)
    fi
    # path.sh pins OMP_NUM_THREADS=1 for parallel data jobs; training gets the cores instead.
    local ncores
    ncores=$(OMP_NUM_THREADS= nproc)  # nproc itself honours OMP_NUM_THREADS
    OMP_NUM_THREADS=$(( ncores / nproc_train > 0 ? ncores / nproc_train : 1 ))
    export OMP_NUM_THREADS
}
