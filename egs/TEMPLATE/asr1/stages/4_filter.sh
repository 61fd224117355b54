# Stage 4: drop training/validation utterances that are too short, too long or have empty text.
# Every drop is counted in the log and listed in <dir>/.backup/dropped.txt.
for dset in ${train_sp} ${valid_set}; do
    if [ -f "${feats_dir}/${dset}/.filtered" ]; then
        log "skip: ${feats_dir}/${dset} already filtered"
        continue
    fi
    python -m speechllm.bin.fix_data_dir "${feats_dir}/${dset}" --min_dur "${min_dur}" --max_dur "${max_dur}"
    touch "${feats_dir}/${dset}/.filtered"
done
