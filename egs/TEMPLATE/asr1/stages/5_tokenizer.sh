# Stage 5: sentencepiece model and token list from the training transcripts.
if [ -f "${token_dir}/tokens.txt" ]; then
    log "skip: ${token_dir}/tokens.txt exists"
else
    python -m speechllm.bin.tokenizer_train --input "${data_dir}/${train_set}/text" --kaldi_text \
        --model_type "${token_type}" --nbpe "${nbpe}" --out_dir "${token_dir}"
fi
