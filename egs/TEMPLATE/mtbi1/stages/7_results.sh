# Stage 7: RESULTS.md: the WER rows of every scored decoding under ${expdir} (and
# ${results_extra_exp_dirs}), written anew by write_results, then one MTBI table per benchmark set
# (mtbi_table: a row per system of --systems in order, and the LLM's own answers; paired
# differences to the first system, or to each of --table_references). The recipe's
# command and the stage times head the file; each table section repeats the stage times.
# shellcheck disable=SC2086
python -m speechllm.bin.write_results --exp_dir "${expdir}" ${results_extra_exp_dirs} --out "${results_md}" \
    --stage_times "${timing_file}" --recipe "$(pwd)" --header "Command: \`${recipe_cmd}\`"
llm_row_opt=()
[ -n "${llm_row}" ] && llm_row_opt=(--llm_row "${llm_row}")
ref_opts=()
for ref in ${table_references}; do
    if [ -n "${sys_label[${ref}]+x}" ]; then
        ref_opts+=(--reference "${sys_label[${ref}]}")
    else
        log "--table_references: ${ref} is not one of --systems; the tables do not compare with it"
    fi
done
for dset in ${mtbi_test_sets}; do
    rows=()
    for sys in ${systems}; do
        result=${expdir}/sllm_${sys}/decode_${mtbi_inference_tag}/${dset}/mtbi_score/result.json
        rows+=(--system "${sys_label[${sys}]}=${result}")
    done
    python -m speechllm.bin.mtbi_table "${rows[@]}" "${llm_row_opt[@]}" "${ref_opts[@]}" --out "${results_md}" \
        --section "MTBI benchmark: ${dset}" --stage_times "${timing_file}" \
        --header "Systems (${systems_file}): ${systems}; LLM: ${llm}"
done
log "wrote ${results_md}"
