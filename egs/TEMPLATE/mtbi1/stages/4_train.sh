# Stage 4: every system of --systems trained by sllm1's training stage (the shared Trainer) on the
# same data with the same budget, into ${expdir}/sllm_<name> (with its resolved config.yaml).
# A system's config is ${expdir}/systems/<name>.yaml (its entry of ${systems_file}); the recipe adds
# the LLM, the encoder initialization, the CMVN stats, the targets and word alignment it reads, and
# then --sllm_args. With --train_jobs N (CPU), N systems train at a time, each pinned to its share
# of the cores (taskset) with one thread per core; a free share takes the next system.
train_system() {  # $1: a system name
    sllm_exp=${expdir}/sllm_$1
    sllm_config=${sys_config[$1]}
    sllm_args="--llm ${llm}"
    [ "${sys_targets[$1]}" = 1 ] && sllm_args+=" --mtbi.targets ${train_targets}"
    [ "${sys_interleave[$1]}" = 1 ] && sllm_args+=" --mtbi.word_align ${align_dir}/${train_set}/word_align"
    sllm_args+=" ${common_sllm_args}"
    log "system $1 (${sys_label[$1]}): ${sllm_config}"
    . "${sllm_template_dir}/stages/5_train.sh"
}

if [ "${train_jobs}" -le 1 ]; then
    for sys in ${systems}; do
        train_system "${sys}"
    done
else
    if [ "${ngpu}" -gt 0 ] || [ "${ddp_cpu_procs}" -gt 1 ]; then
        log "error: --train_jobs ${train_jobs} shares the CPU cores among systems; it needs --ngpu 0 and no --ddp_cpu_procs"
        exit 1
    fi
    # The finished systems are skipped here, in this shell, so that run_stage counts the skips.
    todo=()
    for sys in ${systems}; do
        if [ -f "${expdir}/sllm_${sys}/.done" ]; then
            log "skip: ${expdir}/sllm_${sys}/.done exists (training finished)"
        else
            todo+=("${sys}")
        fi
    done
    n_jobs=$(( train_jobs < ${#todo[@]} ? train_jobs : ${#todo[@]} ))
    shares=()
    # one line per job: its cores, as a taskset -c list (never more jobs than cores)
    if [ "${n_jobs}" -gt 0 ]; then
        mapfile -t shares < <(python -m speechllm.utils.cores "${n_jobs}")
        if [ "${#shares[@]}" = 0 ]; then
            log "error: python -m speechllm.utils.cores ${n_jobs} gave no core shares"
            exit 1
        fi
    fi
    [ "${#shares[@]}" -lt "${train_jobs}" ] && log "--train_jobs ${train_jobs}: ${#shares[@]} at a time (${#todo[@]} systems to train, cores: ${shares[*]:-none needed})"
    queue=${expdir}/.train_queue
    echo 0 > "${queue}"
    next_system() {  # the index of the next system to train, taken under a lock
        ( flock 9; local n; read -r n < "${queue}"; echo $((n + 1)) > "${queue}"; echo "${n}" ) 9> "${queue}.lock"
    }
    pids=()
    for share in "${shares[@]}"; do
        (
            taskset -cp "${share}" "${BASHPID}" > /dev/null   # its training processes inherit the cores
            while i=$(next_system) && [ "${i}" -lt "${#todo[@]}" ]; do
                log "cores ${share}: system ${todo[${i}]}"
                train_system "${todo[${i}]}"
            done
        ) &
        pids+=($!)
    done
    failed=0
    for pid in "${pids[@]}"; do
        wait "${pid}" || failed=1
    done
    rm -f "${queue}" "${queue}.lock"
    if [ "${failed}" != 0 ]; then
        log "error: a system's training failed (see its exp dir's train.log under ${expdir})"
        exit 1
    fi
fi
sllm_args=${common_sllm_args}   # train_system set it per system; later stages see the user's again
