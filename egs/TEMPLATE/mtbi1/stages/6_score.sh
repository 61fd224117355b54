# Stage 6: for every system, WER/CER of the transcribed test sets (with empty/looping/cut counts)
# in decode_<tag>/<set>/score, and the benchmark scores (speechllm.bin.mtbi_score: seen/unseen
# wording WER and agreement, instruction following, seen/unseen task accuracy, output counts) in
# decode_<mtbi tag>/<set>/mtbi_score. A score newer than its decoding is kept.
scored() {  # scored RESULT DIR: true (and says so) when RESULT is newer than the decoding DIR/text
    if [ "$1" -nt "$2/text" ]; then
        log "skip: $1 is newer than the decoding"
        return 0
    fi
    return 1
}
for sys in ${systems}; do
    sllm_exp=${expdir}/sllm_${sys}
    for dset in ${test_sets}; do
        dir=${sllm_exp}/decode_${inference_tag}/${dset}
        scored "${dir}/score/result.json" "${dir}" && continue
        python -m speechllm.bin.score --ref "${sllm_feats_dir}/${dset}/text" --hyp "${dir}/text" \
            --gen_info "${dir}/gen_info" --out_dir "${dir}/score"
    done
    for dset in ${mtbi_test_sets}; do
        dir=${sllm_exp}/decode_${mtbi_inference_tag}/${dset}
        scored "${dir}/mtbi_score/result.json" "${dir}" && continue
        python -m speechllm.bin.mtbi_score --targets "${targets_dir}/${dset}.jsonl" --hyp "${dir}/text" \
            --gen_info "${dir}/gen_info" --out_dir "${dir}/mtbi_score" > "${dir}/mtbi_score.log"
        log "system ${sys}: ${dir}/mtbi_score/summary.txt"
    done
done
