# Stage 6: training with the shared Trainer. Resumes from ${asr_exp}/checkpoints/last.pt if present.
if [ -f "${asr_exp}/.done" ]; then
    log "skip: ${asr_exp}/.done exists (training finished)"
else
    nproc_train=1; device=cpu
    [ "${ngpu}" -gt 0 ] && { nproc_train=${ngpu}; device=cuda; }
    [ "${ddp_cpu_procs}" -gt 1 ] && nproc_train=${ddp_cpu_procs}
    if [ "${nproc_train}" -gt 1 ]; then
        launcher=(torchrun --standalone --nproc_per_node "${nproc_train}")
    else
        launcher=(python)
    fi
    # path.sh pins OMP_NUM_THREADS=1 for parallel data jobs; training gets the cores instead.
    ncores=$(OMP_NUM_THREADS= nproc)  # nproc itself honours OMP_NUM_THREADS
    OMP_NUM_THREADS=$(( ncores / nproc_train > 0 ? ncores / nproc_train : 1 ))
    export OMP_NUM_THREADS
    mkdir -p "${asr_exp}"
    log "training log: ${asr_exp}/train.log (${nproc_train} process(es), ${OMP_NUM_THREADS} threads each)"
    # shellcheck disable=SC2086
    ${train_cmd} --gpu "${ngpu}" "${asr_exp}/train.log" \
        "${launcher[@]}" -m speechllm.bin.train --task asr --config "${asr_config}" \
            --train_data_dir "${asr_feats_dir}/${train_sp}" --valid_data_dir "${asr_feats_dir}/${valid_set}" \
            --token_list "${token_dir}/tokens.txt" --bpemodel "${token_dir}/tokenizer.model" \
            --exp_dir "${asr_exp}" --device "${device}" \
            --normalize_conf.stats_file "${feats_dir}/${train_sp}/cmvn.json" ${asr_args}
    touch "${asr_exp}/.done"
fi
