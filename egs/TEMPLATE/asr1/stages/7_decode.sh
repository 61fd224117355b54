# Stage 7: decoding of every test set in ${inference_nj} parallel jobs (utterances batched), once
# per entry of ${decodings[@]} (asr.sh): with use_lm=true also with shallow fusion of the stage-5b
# LM (lm_weight from ${lm_inference_config}), and with --lm_tune_set, that set once per pair of
# --lm_tune_grid (the pair's --ctc_weight/--lm_weight after the config). With use_lexicon=true the
# LM decodings spell only the words of stage 5b's word list.
for decoding in "${decodings[@]}"; do
    read -r tag config <<< "${decoding}"
    lm_opts=()
    lm_info=""
    if [ "${config}" = "${lm_inference_config}" ] && [ "${use_lm}" = true ]; then
        [ -f "${config}" ] || { log "error: use_lm=true needs ${config} (decoding options with lm_weight)"; exit 1; }
        [ -e "${lm_exp}/${inference_lm}" ] || { log "error: no LM ${lm_exp}/${inference_lm} (run stage 5b)"; exit 1; }
        lm_opts=(--lm_dir "${lm_exp}" --lm_checkpoint "${lm_exp}/${inference_lm}")
        lm_info=" lm: ${lm_exp}/${inference_lm}"
        if [ "${use_lexicon}" = true ]; then
            [ -f "${lm_exp}/words.txt" ] || { log "error: no lexicon ${lm_exp}/words.txt (run stage 5b)"; exit 1; }
            lm_opts+=(--lexicon "${lm_exp}/words.txt")
            lm_info+=" lexicon: ${lm_exp}/words.txt"
        fi
    fi
    extra_args=${decoding_args[${tag}]:-}
    for dset in ${decoding_sets[${tag}]:-${test_sets}}; do
        dir=${asr_exp}/decode_${tag}/${dset}
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
                --config "${config}" "${lm_opts[@]}" ${inference_args} ${extra_args}
        merge_job_outputs "${dir}" "${inference_nj}" text nbest gen_info
        {
            echo "model: ${asr_exp}/${inference_model}"
            echo "asr_config: ${asr_config}"
            echo "inference_config: ${config}"
            echo "inference_args: \"${inference_args}\""
            echo "decoding: \"$(config_summary "${config}")${inference_args}${extra_args:+ ${extra_args}}${lm_info}\""
            [ -n "${lm_info}" ] && echo "lm: ${lm_exp}/${inference_lm}"
            echo "data: ${asr_feats_dir}/${dset}"
        } > "${dir}/decode_info.yaml"
    done
done
