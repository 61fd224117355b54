# Stage 6: batched generation for every test set in ${inference_nj} parallel jobs.
for dset in ${test_sets}; do
    dir=${sllm_exp}/decode_${inference_tag}/${dset}
    if [ -f "${dir}/text" ]; then
        log "skip: ${dir}/text exists"
        continue
    fi
    mkdir -p "${dir}/log"
    # shellcheck disable=SC2086
    ${decode_cmd} JOB=1:"${inference_nj}" "${dir}/log/decode.JOB.log" \
        python -m speechllm.bin.sllm_inference --exp_dir "${sllm_exp}" --checkpoint "${sllm_exp}/${inference_model}" \
            --data_dir "${sllm_feats_dir}/${dset}" --output_dir "${dir}" --nj "${inference_nj}" --job JOB \
            --config "${inference_config}" ${inference_args}
    merge_job_outputs "${dir}" "${inference_nj}" text gen_info
    {
        echo "model: ${sllm_exp}/${inference_model}"
        echo "sllm_config: ${sllm_config}"
        echo "inference_config: ${inference_config}"
        echo "inference_args: \"${inference_args}\""
        echo "decoding: \"$(config_summary "${inference_config}")${inference_args}\""
        echo "data: ${sllm_feats_dir}/${dset}"
    } > "${dir}/decode_info.yaml"
done
