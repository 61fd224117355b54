#!/usr/bin/env bash
# set_train_launcher: from ${ngpu} and ${ddp_cpu_procs}, set the training stages' process layout:
#   nproc_train    processes (GPUs, or CPU processes with gloo)
#   device         cpu or cuda
#   train_threads  the cores divided among the processes
#   launcher       (env OMP_NUM_THREADS=T python) or (env OMP_NUM_THREADS=T torchrun --standalone
#                  --nproc_per_node N), an array
# The thread count goes into the launcher's environment only: the parallel jobs of later stages
# (decoding with --inference_nj) keep path.sh's OMP_NUM_THREADS=1 instead of oversubscribing.
set_train_launcher() {
    nproc_train=1; device=cpu
    [ "${ngpu}" -gt 0 ] && { nproc_train=${ngpu}; device=cuda; }
    [ "${ddp_cpu_procs}" -gt 1 ] && nproc_train=${ddp_cpu_procs}
    local ncores
    ncores=$(OMP_NUM_THREADS= nproc)  # nproc itself honours OMP_NUM_THREADS
    train_threads=$(( ncores / nproc_train > 0 ? ncores / nproc_train : 1 ))
    if [ "${nproc_train}" -gt 1 ]; then
        launcher=(env OMP_NUM_THREADS="${train_threads}" torchrun --standalone --nproc_per_node "${nproc_train}")
    else
        launcher=(env OMP_NUM_THREADS="${train_threads}" python)
    fi
}
