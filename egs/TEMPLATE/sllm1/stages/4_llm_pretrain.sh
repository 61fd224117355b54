# Stage 4 (offline recipes only): pretrain a small causal LM on the corpus text plus text-task
# instructions (${llm_prompts}), export it as a transformers directory (${llm_dir}) and report
# its text-only accuracy per task. The transcripts of the valid/test sets are withheld from its
# training text. Recipes with a hub LLM leave --llm_pretrain_config empty and skip this.
if [ -z "${llm_pretrain_config}" ]; then
    log "skip: no --llm_pretrain_config (the config's llm is used as is)"
elif [ -f "${llm_exp}/.done" ]; then
    log "skip: ${llm_exp}/.done exists (LLM in ${llm_dir})"
else
    [ -n "${llm_prompts}" ] || { log "error: --llm_pretrain_config needs --llm_prompts"; exit 1; }
    lm_data=${llm_exp}/data
    exclude=()
    for dset in ${valid_set} ${test_sets}; do exclude+=("${data_dir}/${dset}/text"); done
    if [ -f "${lm_data}/prep_info.yaml" ]; then
        log "skip: LM data exists in ${lm_data}"
    else
        # shellcheck disable=SC2086
        python -m speechllm.bin.lm_prepare_data --prompts "${llm_prompts}" --out_dir "${lm_data}" \
            --exclude "${exclude[@]}" ${llm_prep_opts}
    fi
    ncores=$(OMP_NUM_THREADS= nproc)
    log "LLM training log: ${llm_exp}/train.log"
    OMP_NUM_THREADS=${ncores} ${train_cmd} "${llm_exp}/train.log" \
        python -m speechllm.bin.train --task lm --config "${llm_pretrain_config}" \
            --train_jsonl "${lm_data}/train.jsonl" --valid_jsonl "${lm_data}/valid.jsonl" \
            --tokenizer_dir "${lm_data}/tokenizer" --exp_dir "${llm_exp}" --device cpu
    python -m speechllm.bin.lm_export --exp_dir "${llm_exp}" --out_dir "${llm_dir}"
    OMP_NUM_THREADS=${ncores} python -m speechllm.bin.lm_eval_tasks --model_dir "${llm_dir}" \
        --eval_jsonl "${lm_data}/eval.jsonl" --out_dir "${llm_exp}/eval_tasks"
    touch "${llm_exp}/.done"
fi
