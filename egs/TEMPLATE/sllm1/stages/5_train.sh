# Stage 5: speech-LLM training with the shared Trainer (DDP, or FSDP when the config says
# distributed_strategy: fsdp). Resumes from ${sllm_exp}/checkpoints/last.pt if present.
if [ -f "${sllm_exp}/.done" ]; then
    log "skip: ${sllm_exp}/.done exists (training finished)"
else
    set_train_launcher
    extra=()
    # The LLM pretrained by stage 4 replaces the config's llm (a hub id in full-scale configs).
    [ -n "${llm_pretrain_config}" ] && extra+=(--llm "${llm_dir}")
    [ -n "${encoder_init}" ] && extra+=(--encoder_init "${encoder_init}")
    [ "${feats_type}" = fbank ] && extra+=(--normalize_conf.stats_file "${feats_dir}/${train_set}/cmvn.json")
    mkdir -p "${sllm_exp}"
    log "training log: ${sllm_exp}/train.log (${nproc_train} process(es), ${train_threads} threads each)"
    # shellcheck disable=SC2086
    ${train_cmd} --gpu "${ngpu}" "${sllm_exp}/train.log" \
        "${launcher[@]}" -m speechllm.bin.train --task sllm --config "${sllm_config}" \
            --train_data_dir "${sllm_feats_dir}/${train_set}" --valid_data_dir "${sllm_feats_dir}/${valid_set}" \
            --exp_dir "${sllm_exp}" --device "${device}" "${extra[@]}" ${sllm_args}
    touch "${sllm_exp}/.done"
fi
