# Stage 3b: one layer of a pretrained (or fine-tuned) speech encoder, dumped per set with kaldiio,
# so that training on it (encoder: precomputed, --train_on_encoder_feats true) and k-means
# (stage 3c) need no encoder in the loop. Reads the sets of stage 3 (${feats_dir}/<set>: audio
# for waveform encoders, fbank for fbank ones); training/validation sets are then filtered as in
# stage 4 (same --min_dur/--max_dur; utterances the encoder skipped go too).
if [ -z "${encoder_feats_config}" ]; then
    log "skip: no --encoder_feats_config (nothing to dump; training reads fbank or raw audio)"
else
    device=cpu
    [ "${ngpu}" -gt 0 ] && device=cuda
    ckpt_opt=()
    [ -n "${encoder_feats_checkpoint}" ] && ckpt_opt=(--checkpoint "${encoder_feats_checkpoint}")
    for dset in ${train_sp} ${valid_set} ${test_sets}; do
        out=${encoder_feats_dir}/${dset}
        if [ -f "${out}/.done" ]; then
            log "skip: ${encoder_feats_config} layer ${encoder_feats_layer} features of ${dset} exist in ${out}"
            continue
        fi
        mkdir -p "${out}/log"
        for f in text utt2spk spk2utt utt2dur segments wav.scp; do
            [ -f "${feats_dir}/${dset}/${f}" ] && cp "${feats_dir}/${dset}/${f}" "${out}/${f}"
        done
        # shellcheck disable=SC2086
        ${train_cmd} --gpu "${ngpu}" JOB=1:"${nj}" "${out}/log/dump.JOB.log" \
            python -m speechllm.bin.dump_encoder_features --data_dir "${feats_dir}/${dset}" --out_dir "${out}" \
                --encoder_config "${encoder_feats_config}" "${ckpt_opt[@]}" --layer "${encoder_feats_layer}" \
                --dtype "${encoder_feats_dtype}" --device "${device}" --nj "${nj}" --job JOB ${encoder_feats_opts}
        python -m speechllm.bin.dump_encoder_features --out_dir "${out}" --combine "${nj}"
        if [ "${dset}" = "${train_sp}" ] || [ "${dset}" = "${valid_set}" ]; then
            python -m speechllm.bin.fix_data_dir "${out}" --min_dur "${min_dur}" --max_dur "${max_dur}"
        fi
        touch "${out}/.done"
    done
fi
