# Stage 9: one archive with everything needed to decode: weights, resolved config, tokens, CMVN.
mkdir -p "${pack_dir}"
python -m speechllm.bin.pack_model --exp_dir "${asr_exp}" --checkpoint "${asr_exp}/${inference_model}" \
    --token_dir "${token_dir}" --out "${pack_dir}/asr_${asr_tag}.tar.gz"
