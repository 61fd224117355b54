# Stage 1: corpus-specific data preparation into Kaldi data dirs, then validation.
# Sourced by asr.sh (its variables are in scope).
if [ -f "${data_dir}/.data.done" ]; then
    log "skip: ${data_dir}/.data.done exists (remove it to prepare the data again)"
else
    # shellcheck disable=SC2086
    local/data.sh --data_dir "${data_dir}" --nj "${nj}" ${local_data_opts}
    touch "${data_dir}/.data.done"
fi
for dset in ${train_set} ${valid_set} ${test_sets}; do
    python -m speechllm.bin.validate_data_dir "${data_dir}/${dset}"
done
