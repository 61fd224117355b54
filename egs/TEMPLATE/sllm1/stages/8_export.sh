# Stage 8: LoRA merged into the LLM; a standalone directory (llm/ in transformers format,
# speech.pt with encoder + projector, config.yaml) that decodes without the experiment dir.
if [ -f "${export_dir}/.done" ]; then
    log "skip: ${export_dir} exists"
else
    python -m speechllm.bin.sllm_export --exp_dir "${sllm_exp}" --checkpoint "${sllm_exp}/${inference_model}" \
        --out_dir "${export_dir}"
    touch "${export_dir}/.done"
fi
