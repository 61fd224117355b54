# Stage 7: decoding of every test set in ${inference_nj} parallel jobs (utterances batched).
for dset in ${test_sets}; do
    dir=${asr_exp}/decode_${inference_tag}/${dset}
    if [ -f "${dir}/text" ]; then
        log "skip: ${dir}/text exists"
        continue
    fi
    mkdir -p "${dir}/log"
    # shellcheck disable=SC2086
    ${decode_cmd} JOB=1:"${inference_nj}" "${dir}/log/decode.JOB.log" \
        python -m speechllm.bin.asr_inference --model_dir "${asr_exp}" --checkpoint "${asr_exp}/${inference_model}" \
            --token_list "${token_dir}/tokens.txt" --bpemodel "${token_dir}/tokenizer.model" \
            --data_dir "${asr_feats_dir}/${dset}" --output_dir "${dir}" --nj "${inference_nj}" --job JOB \
            --config "${inference_config}" ${inference_args}
    for f in text nbest; do
        for j in $(seq "${inference_nj}"); do cat "${dir}/${f}.${j}"; done | sort -k1,1 > "${dir}/${f}"
    done
    {
        echo "model: ${asr_exp}/${inference_model}"
        echo "asr_config: ${asr_config}"
        echo "inference_config: ${inference_config}"
        echo "inference_args: \"${inference_args}\""
        echo "decoding: \"$(grep -v '^#' "${inference_config}" | grep -v '^\s*$' | tr '\n' ' ' | sed 's/  */ /g')${inference_args}\""
        echo "data: ${asr_feats_dir}/${dset}"
    } > "${dir}/decode_info.yaml"
done
