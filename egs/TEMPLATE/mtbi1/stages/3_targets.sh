# Stage 3: the frozen LLM's answers to task prompts about the transcripts (speechllm.bin.mtbi_make_targets,
# ${nj} jobs): the training set's (--splits train: training wordings of training tasks,
# ${train_per_utt} pairs per utterance) for the systems that imitate, and each benchmark set's
# (--splits all: every wording and task, ${eval_per_utt} pairs per utterance), in ${targets_dir}.
# A killed run resumes where it stopped; a complete file is kept.
make_targets() {  # make_targets SET SPLITS PER_UTT EXTRA_OPTS
    local dset=$1 splits=$2 per_utt=$3 extra=$4 out=${targets_dir}/$1.jsonl device=cpu
    if grep -qs '"complete": true' "${out}.meta.json"; then
        log "skip: ${out} is complete (delete it and its .meta.json to make it again)"
        return 0
    fi
    [ "${ngpu}" -gt 0 ] && device=cuda
    local job_opts=()
    [ "${nj}" -gt 1 ] && job_opts=(--nj "${nj}" --job JOB)
    mkdir -p "${targets_dir}/log"
    log "targets of ${dset} (--splits ${splits}, --per_utt ${per_utt}) from ${llm}; log: ${targets_dir}/log/${dset}.*.log"
    # shellcheck disable=SC2086
    ${decode_cmd} --gpu "${ngpu}" JOB=1:"${nj}" "${targets_dir}/log/${dset}.JOB.log" \
        python -m speechllm.bin.mtbi_make_targets --data_dir "${sllm_feats_dir}/${dset}" --prompts "${prompts_file}" \
            --llm "${llm}" --out "${out}" --splits "${splits}" --per_utt "${per_utt}" --seed "${targets_seed}" \
            --device "${device}" "${job_opts[@]}" ${targets_opts} ${extra}
    if [ "${nj}" -gt 1 ]; then
        python -m speechllm.bin.mtbi_make_targets --out "${out}" --combine "${nj}"
    fi
}
if [ "${any_targets}" = true ]; then
    make_targets "${train_set}" train "${train_per_utt}" "${train_targets_opts}"
else
    log "skip: no system of '${systems}' imitates (no training targets needed)"
fi
for dset in ${mtbi_test_sets}; do
    make_targets "${dset}" all "${eval_per_utt}" ""
done
