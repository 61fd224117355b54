# Stage 1: check that what the other recipes make is there, and name the recipe that makes what is
# missing: the data dirs and features (and CMVN stats) of the sets, the ASR model and token list
# (word alignment, when a system interleaves; encoder initialization), the LLM, the prompt set.
data_hint="run ${data_recipe:-the recipe that prepares this corpus} first"
asr_hint="run ${asr_recipe:-the asr1 recipe of this corpus} first"
missing=0
need() {  # need PATH WHAT HINT: count and log PATH when it does not exist
    if [ ! -e "$1" ]; then
        log "error: no $2 at $1 ($3)"
        missing=$((missing + 1))
    fi
}
for dset in ${train_set} ${valid_set} ${test_sets}; do
    need "${sllm_feats_dir}/${dset}/text" "transcripts of ${dset}" "${data_hint}: its data stages make them"
    if [ "${feats_type}" = fbank ]; then
        need "${sllm_feats_dir}/${dset}/feats.scp" "fbank features of ${dset}" "${data_hint}: its feature stage makes them"
    else
        need "${sllm_feats_dir}/${dset}/wav.scp" "audio list of ${dset}" "${data_hint}: its data stage makes it"
    fi
done
if [ "${feats_type}" = fbank ]; then
    need "${feats_dir}/${train_set}/cmvn.json" "CMVN statistics" "${data_hint}: its feature stage makes them"
fi
if [ -n "${encoder_init}" ]; then
    need "${encoder_init}" "ASR model to start the encoder from" "${asr_hint}: its training stage makes it"
fi
if [ "${any_interleave}" = true ]; then
    if [ -z "${asr_exp}" ] || [ -z "${asr_token_dir}" ]; then
        log "error: the systems${interleaving_systems} interleave speech and text: they need word times from a CTC" \
            "ASR model; give --asr_exp (an asr1 experiment trained on this corpus) and --asr_token_dir, or leave" \
            "them out of --systems"
        missing=$((missing + 1))
    else
        why="aligns the words of the systems${interleaving_systems}; ${asr_hint}"
        need "${asr_exp}/config.yaml" "ASR training config" "${why}"
        need "${asr_exp}/${asr_model}" "ASR model" "${why}"
        need "${asr_token_dir}/tokens.txt" "ASR token list" "${why}"
        need "${asr_token_dir}/tokenizer.model" "ASR tokenizer" "${why}"
        for dset in ${align_sets}; do
            need "${align_feats_dir}/${dset}/text" "data dir to align" "${why}"
        done
    fi
fi
case "${llm}" in
    /*|./*|../*) llm_is_dir=true ;;
    *) if [ -e "${llm}" ]; then llm_is_dir=true; else llm_is_dir=false; fi ;;
esac
if [ "${llm_is_dir}" = true ]; then
    need "${llm}/config.json" "LLM" "run ${llm_recipe:-the recipe that makes it} first"
else
    log "LLM ${llm}: a hub id (without network it must be in the Hugging Face cache)"
fi
need "${prompts_file}" "prompt set (prompts.file of the systems' config)" "it must be reachable from $(pwd)"
need "${inference_config}" "decoding config" "--inference_config"
need "${mtbi_inference_config}" "benchmark decoding config" "--mtbi_inference_config"
if [ "${missing}" -gt 0 ]; then
    log "error: ${missing} prerequisite(s) missing (listed above)"
    exit 1
fi
log "prerequisites found: sets ${train_set} ${valid_set} ${test_sets} in ${sllm_feats_dir}; LLM ${llm};" \
    "prompts ${prompts_file}; systems ${systems}"
