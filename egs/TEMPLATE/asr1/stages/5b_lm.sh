# Stage 5b (use_lm=true): an external LM over the ASR token list (speechllm.bin.train --task lm),
# for shallow fusion in stage 7. Each sentence of ${lm_train_text} is <sos/eos> tokens <sos/eos>;
# validation (and the kept checkpoints, ${inference_lm}) on ${lm_valid_text}. With use_lexicon=true
# also the word list of the LM decodings: every word of ${lm_train_text}, one per line.
if [ -z "${lm_train_text}" ]; then  # resolved here: stage 1 (local/data.sh) may have just made it
    lm_train_text=${data_dir}/${train_set}/text
    [ -f "${data_dir}/local/lm_train.txt" ] && lm_train_text=${data_dir}/local/lm_train.txt
fi
if [ "${use_lm}" != true ]; then
    log "skip: use_lm=false (no external LM)"
elif [ -f "${lm_exp}/.done" ]; then
    log "skip: ${lm_exp}/.done exists (LM trained)"
else
    [ -n "${lm_valid_text}" ] || lm_valid_text=${data_dir}/${valid_set}/text
    for f in "${lm_config}" "${token_dir}/tokens.txt" "${lm_train_text}" "${lm_valid_text}"; do
        [ -f "${f}" ] || { log "error: ${f} not found (stage 5b needs lm_config, the token list of stage 5, lm_train_text, lm_valid_text)"; exit 1; }
    done
    set_train_launcher
    mkdir -p "${lm_exp}"
    log "LM training log: ${lm_exp}/train.log ($(wc -l < "${lm_train_text}") sentences of ${lm_train_text})"
    # shellcheck disable=SC2086
    ${train_cmd} --gpu "${ngpu}" "${lm_exp}/train.log" \
        "${launcher[@]}" -m speechllm.bin.train --task lm --config "${lm_config}" \
            --train_text "${lm_train_text}" --valid_text "${lm_valid_text}" \
            --token_list "${token_dir}/tokens.txt" --bpemodel "${token_dir}/tokenizer.model" \
            --exp_dir "${lm_exp}" --device "${device}" ${lm_args}
    touch "${lm_exp}/.done"
fi
if [ "${use_lm}" = true ] && [ "${use_lexicon}" = true ]; then
    if [ -f "${lm_exp}/words.txt" ]; then
        log "skip: ${lm_exp}/words.txt exists (lexicon of the LM decodings)"
    else
        [ -f "${lm_train_text}" ] || { log "error: ${lm_train_text} not found (the lexicon is its words)"; exit 1; }
        mkdir -p "${lm_exp}"
        cut -d' ' -f2- "${lm_train_text}" | tr -s ' ' '\n' | sed '/^$/d' | LC_ALL=C sort -u > "${lm_exp}/words.txt.tmp"
        mv "${lm_exp}/words.txt.tmp" "${lm_exp}/words.txt"
        log "lexicon: $(wc -l < "${lm_exp}/words.txt") words of ${lm_train_text} -> ${lm_exp}/words.txt"
    fi
fi
