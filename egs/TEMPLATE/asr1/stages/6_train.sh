# Stage 6: training with the shared Trainer. Resumes from ${asr_exp}/checkpoints/last.pt if present.
if [ -f "${asr_exp}/.done" ]; then
    log "skip: ${asr_exp}/.done exists (training finished)"
else
    set_train_launcher
    mkdir -p "${asr_exp}"
    log "training log: ${asr_exp}/train.log (${nproc_train} process(es), ${train_threads} threads each)"
    # shellcheck disable=SC2086
    ${train_cmd} --gpu "${ngpu}" "${asr_exp}/train.log" \
        "${launcher[@]}" -m speechllm.bin.train --task asr --config "${asr_config}" \
            --train_data_dir "${asr_feats_dir}/${train_sp}" --valid_data_dir "${asr_feats_dir}/${valid_set}" \
            --token_list "${token_dir}/tokens.txt" --bpemodel "${token_dir}/tokenizer.model" \
            --exp_dir "${asr_exp}" --device "${device}" \
            --normalize_conf.stats_file "${feats_dir}/${train_sp}/cmvn.json" ${asr_args}
    touch "${asr_exp}/.done"
fi
