# Stage 3c: discrete speech units. k-means (--num_units clusters) on a random subset of the
# training set's dumped encoder features (stage 3b), then every set's frames -> nearest center:
# ${units_dir}/<set>/units (one unit per frame) and units_dedup (consecutive repeats removed).
if [ -z "${encoder_feats_config}" ] || [ "${num_units}" -le 0 ]; then
    log "skip: units need --encoder_feats_config (stage 3b) and --num_units > 0"
else
    device=cpu
    [ "${ngpu}" -gt 0 ] && device=cuda
    kmeans=${units_dir}/kmeans.pt
    if [ -f "${kmeans}" ]; then
        log "skip: ${kmeans} exists"
    else
        mkdir -p "${units_dir}"
        # shellcheck disable=SC2086
        python -m speechllm.bin.train_kmeans --feats_scp "${encoder_feats_dir}/${train_sp}/feats.scp" \
            --out "${kmeans}" --num_clusters "${num_units}" --subset_utts "${kmeans_subset_utts}" \
            --seed 0 --device "${device}" ${kmeans_opts}
    fi
    for dset in ${train_sp} ${valid_set} ${test_sets}; do
        out=${units_dir}/${dset}
        if [ -f "${out}/units" ] && [ "${out}/units" -nt "${kmeans}" ]; then
            log "skip: ${out}/units exists (newer than ${kmeans})"
            continue
        fi
        mkdir -p "${out}/log"
        ${train_cmd} JOB=1:"${nj}" "${out}/log/units.JOB.log" \
            python -m speechllm.bin.dump_units --feats_scp "${encoder_feats_dir}/${dset}/feats.scp" \
                --kmeans "${kmeans}" --out_dir "${out}" --nj "${nj}" --job JOB
        python -m speechllm.bin.dump_units --out_dir "${out}" --combine "${nj}"
    done
fi
