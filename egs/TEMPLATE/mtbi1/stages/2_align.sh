# Stage 2: word times of the transcripts of ${align_sets} by CTC forced alignment with the ASR model
# (speechllm.bin.align_words, ${nj} jobs): ${align_dir}/<set>/word_align (CTM) and align_failed.txt.
# Only the systems that interleave speech and text read them (mtbi.word_align).
if [ "${any_interleave}" != true ]; then
    log "skip: no system of '${systems}' interleaves (no word alignment needed)"
else
    # The ASR config as the aligner reads it from here: its CMVN path is relative to its own recipe.
    align_config=${align_dir}/asr_config.yaml
    cmvn_override=()
    [ -f "${asr_cmvn}" ] && cmvn_override=(--normalize_conf.stats_file "${asr_cmvn}")
    mkdir -p "${align_dir}"
    python -c 'import sys; from speechllm.utils.config import load_config, save_config
save_config(load_config(sys.argv[1], sys.argv[3:]), sys.argv[2])' \
        "${asr_exp}/config.yaml" "${align_config}" "${cmvn_override[@]}"
    device=cpu
    [ "${ngpu}" -gt 0 ] && device=cuda
    job_opts=()
    [ "${nj}" -gt 1 ] && job_opts=(--nj "${nj}" --job JOB)
    for dset in ${align_sets}; do
        out=${align_dir}/${dset}
        if [ -f "${out}/word_align" ]; then
            log "skip: ${out}/word_align exists"
            continue
        fi
        mkdir -p "${out}/log"
        log "aligning ${align_feats_dir}/${dset} with ${asr_exp}/${asr_model}; log: ${out}/log/align.*.log"
        # shellcheck disable=SC2086
        ${decode_cmd} --gpu "${ngpu}" JOB=1:"${nj}" "${out}/log/align.JOB.log" \
            python -m speechllm.bin.align_words --asr_config "${align_config}" --checkpoint "${asr_exp}/${asr_model}" \
                --token_list "${asr_token_dir}/tokens.txt" --bpemodel "${asr_token_dir}/tokenizer.model" \
                --data_dir "${align_feats_dir}/${dset}" --output_dir "${out}" --device "${device}" \
                "${job_opts[@]}" ${align_opts}
        if [ "${nj}" -gt 1 ]; then
            python -m speechllm.bin.align_words --output_dir "${out}" --combine "${nj}"
        fi
    done
fi
