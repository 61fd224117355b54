# Stage 7: WER/CER of every decoded set (jiwer after the one text normalizer), with counts of
# empty outputs and of outputs that loop or hit the length bound (gen_info), then RESULTS.md.
for dset in ${test_sets}; do
    dir=${sllm_exp}/decode_${inference_tag}/${dset}
    python -m speechllm.bin.score --ref "${sllm_feats_dir}/${dset}/text" --hyp "${dir}/text" \
        --gen_info "${dir}/gen_info" --out_dir "${dir}/score"
done
# shellcheck disable=SC2086
python -m speechllm.bin.write_results --exp_dir "${expdir}" ${results_extra_exp_dirs} --out "${results_md}" \
    --stage_times "${timing_file}" --recipe "$(pwd)" --header "Command: \`${recipe_cmd}\`"
log "wrote ${results_md}"
