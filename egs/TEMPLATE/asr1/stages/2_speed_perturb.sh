# Stage 2: speed perturbation of the training set (sox pipes in wav.scp; no audio is copied).
if [ -z "${speed_perturb_factors}" ]; then
    log "skip: speed_perturb_factors is empty"
elif [ -f "${data_dir}/${train_sp}/.done" ]; then
    log "skip: ${data_dir}/${train_sp} exists"
else
    # shellcheck disable=SC2086
    python -m speechllm.bin.speed_perturb "${data_dir}/${train_set}" "${data_dir}/${train_sp}" \
        --factors ${speed_perturb_factors}
    python -m speechllm.bin.validate_data_dir "${data_dir}/${train_sp}"
    touch "${data_dir}/${train_sp}/.done"
fi
