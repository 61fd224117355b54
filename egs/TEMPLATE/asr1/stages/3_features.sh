# Stage 3: 80-dim Kaldi-compatible fbank in ${nj} jobs per set, dumped with kaldiio; global
# CMVN statistics from the training set (the model applies them, so the packed model has them).
for dset in ${train_sp} ${valid_set} ${test_sets}; do
    out=${feats_dir}/${dset}
    if [ -f "${out}/.done" ]; then
        log "skip: features of ${dset} exist in ${out}"
        continue
    fi
    mkdir -p "${out}/log"
    for f in text utt2spk spk2utt utt2dur segments wav.scp; do
        [ -f "${data_dir}/${dset}/${f}" ] && cp "${data_dir}/${dset}/${f}" "${out}/${f}"
    done
    # shellcheck disable=SC2086
    ${train_cmd} JOB=1:"${nj}" "${out}/log/fbank.JOB.log" \
        python -m speechllm.bin.compute_fbank --data_dir "${data_dir}/${dset}" --out_dir "${out}" \
            --nj "${nj}" --job JOB ${fbank_conf}
    python -m speechllm.bin.compute_fbank --out_dir "${out}" --combine "${nj}"
    touch "${out}/.done"
done
if [ -f "${feats_dir}/${train_sp}/cmvn.json" ]; then
    log "skip: ${feats_dir}/${train_sp}/cmvn.json exists"
else
    python -m speechllm.bin.compute_cmvn "${feats_dir}/${train_sp}/feats.scp" "${feats_dir}/${train_sp}/cmvn.json"
fi
