# Stage 4: every system of --systems trained by sllm1's training stage (the shared Trainer) on the
# same data with the same budget, into ${expdir}/sllm_<name> (with its resolved config.yaml).
# A system's config is ${expdir}/systems/<name>.yaml (its entry of ${systems_file}); the recipe adds
# the LLM, the encoder initialization, the CMVN stats, the targets and word alignment it reads, and
# then --sllm_args.
for sys in ${systems}; do
    sllm_exp=${expdir}/sllm_${sys}
    sllm_config=${sys_config[${sys}]}
    sllm_args="--llm ${llm}"
    [ "${sys_targets[${sys}]}" = 1 ] && sllm_args+=" --mtbi.targets ${train_targets}"
    [ "${sys_interleave[${sys}]}" = 1 ] && sllm_args+=" --mtbi.word_align ${align_dir}/${train_set}/word_align"
    sllm_args+=" ${common_sllm_args}"
    log "system ${sys} (${sys_label[${sys}]}): ${sllm_config}"
    . "${sllm_template_dir}/stages/5_train.sh"
done
sllm_args=${common_sllm_args}
