# Stage 5: for every system, the test sets transcribed (sllm1's decoding stage, --inference_config)
# and the benchmark's task prompts answered (sllm_inference --prompts_jsonl: one output per line of
# the set's targets, keyed by its id, --mtbi_inference_config), in ${inference_nj} jobs each:
# ${expdir}/sllm_<name>/decode_<tag>/<set>/text and gen_info.
for sys in ${systems}; do
    sllm_exp=${expdir}/sllm_${sys}
    sllm_config=${sys_config[${sys}]}
    . "${sllm_template_dir}/stages/6_decode.sh"
    for dset in ${mtbi_test_sets}; do
        dir=${sllm_exp}/decode_${mtbi_inference_tag}/${dset}
        if [ -f "${dir}/text" ]; then
            log "skip: ${dir}/text exists"
            continue
        fi
        mkdir -p "${dir}/log"
        log "system ${sys}: the task prompts of ${targets_dir}/${dset}.jsonl; log: ${dir}/log/decode.*.log"
        # shellcheck disable=SC2086
        ${decode_cmd} JOB=1:"${inference_nj}" "${dir}/log/decode.JOB.log" \
            python -m speechllm.bin.sllm_inference --exp_dir "${sllm_exp}" --checkpoint "${sllm_exp}/${inference_model}" \
                --data_dir "${sllm_feats_dir}/${dset}" --prompts_jsonl "${targets_dir}/${dset}.jsonl" \
                --output_dir "${dir}" --nj "${inference_nj}" --job JOB --config "${mtbi_inference_config}" \
                ${mtbi_inference_args}
        merge_job_outputs "${dir}" "${inference_nj}" text gen_info
    done
done
