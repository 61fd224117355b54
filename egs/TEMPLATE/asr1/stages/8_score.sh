# Stage 8: WER/CER of every decoded set (jiwer after the one text normalizer), with the count of
# hypotheses cut at the token bound, then RESULTS.md.
for decoding in "${decodings[@]}"; do
    read -r tag _ <<< "${decoding}"
    for dset in ${decoding_sets[${tag}]:-${test_sets}}; do
        dir=${asr_exp}/decode_${tag}/${dset}
        # gen_info (decodings of this version on): hypotheses cut at the beam search's token bound
        gen_info=()
        [ -f "${dir}/gen_info" ] && gen_info=(--gen_info "${dir}/gen_info")
        python -m speechllm.bin.score --ref "${feats_dir}/${dset}/text" --hyp "${dir}/text" "${gen_info[@]}" \
            --out_dir "${dir}/score"
    done
done
python -m speechllm.bin.write_results --exp_dir "${expdir}" --out "${results_md}" \
    --stage_times "${timing_file}" --recipe "$(pwd)" --header "Command: \`${recipe_cmd}\`"
log "wrote ${results_md}"
