"""The shell side of recipes: option parsing and the job launchers."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "egs" / "TEMPLATE" / "asr1"
RUN_LOCAL = ROOT / "tools" / "launch" / "run_local.sh"


def _bash(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script, "script", *args], capture_output=True, text=True)


def test_parse_options_sets_declared_variables_and_keeps_positionals():
    script = f'stage=1; nbpe=500; asr_args=""; . {TEMPLATE}/utils/parse_options.sh; echo "$stage|$nbpe|$asr_args|$*"'
    out = _bash(script, "--stage", "6", "pos1", "--nbpe=30", "--asr_args", "--max_epoch 2", "pos2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "6|30|--max_epoch 2|pos1 pos2"


def test_parse_options_rejects_unknown_option():
    out = _bash(f"stage=1; . {TEMPLATE}/utils/parse_options.sh", "--stgae", "3")
    assert out.returncode == 1
    assert "unknown option --stgae" in out.stderr


def test_config_summary_leaves_comments_out(tmp_path):
    (tmp_path / "decode.yaml").write_text('# header\nmode: beam\n\nmaxlen_ratio: 1.0   # why\n'
                                          '                     # more why\ntag: "a#b"\n')
    out = _bash(f". {TEMPLATE}/utils/decode_jobs.sh; config_summary {tmp_path}/decode.yaml")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'mode: beam maxlen_ratio: 1.0 tag: "a#b"'


def test_run_local_runs_every_job_with_its_index(tmp_path):
    out = subprocess.run([str(RUN_LOCAL), "JOB=1:3", str(tmp_path / "log" / "j.JOB.log"),
                          "bash", "-c", f"echo JOB > {tmp_path}/out.JOB"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for j in (1, 2, 3):
        assert (tmp_path / f"out.{j}").read_text().strip() == str(j)
        assert "ended at" in (tmp_path / "log" / f"j.{j}.log").read_text()


def test_run_local_reports_failed_jobs(tmp_path):
    out = subprocess.run([str(RUN_LOCAL), "--max_jobs_run", "1", "JOB=1:3", str(tmp_path / "j.JOB.log"),
                          "bash", "-c", "[ JOB != 2 ]"], capture_output=True, text=True)
    assert out.returncode == 1
    assert "1 of 3 jobs failed" in out.stderr and "j.2.log" in out.stderr


def test_run_stage_times_stages_that_work_and_not_those_that_only_skip(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "1_work.sh").write_text('log "making data"; sleep 2\n')
    (tmp_path / "stages" / "2_done.sh").write_text('log "skip: data/x exists"\n')
    (tmp_path / "stages" / "3_mixed.sh").write_text('log "skip: set a done"; log "decoding set b"; sleep 2\n')
    script = (f". {TEMPLATE}/utils/log.sh; . {TEMPLATE}/utils/run_stage.sh; template_dir={tmp_path}; "
              f"timing_file={tmp_path}/times.tsv; stage=1; stop_stage=3; recipe_cmd='./run.sh --x 1'; "
              "run_stage 1 work; run_stage 2 done; run_stage 3 mixed")
    out = _bash(script)
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in (tmp_path / "times.tsv").read_text().splitlines()]
    assert [(r[0], r[1], r[4]) for r in rows] == [("1", "work", "./run.sh --x 1"), ("3", "mixed", "./run.sh --x 1")]
    assert all(int(r[2]) >= 2 for r in rows)
    # the mixed stage skipped part of its work: its time adds to the earlier run's (results.stage_time_lines)
    assert len(rows[0]) == 5 and rows[1][5:] == ["partial"]
    assert "stage 2: done had nothing to do" in out.stderr


def test_run_stage_names_the_systems_of_a_per_system_stage(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "4_train.sh").write_text('log "training"; sleep 2\n')
    (tmp_path / "stages" / "5_decode.sh").write_text('log "skip: a decoded"; log "decoding b"; sleep 2\n')
    script = (f". {TEMPLATE}/utils/log.sh; . {TEMPLATE}/utils/run_stage.sh; template_dir={tmp_path}; "
              f"timing_file={tmp_path}/times.tsv; stage=1; stop_stage=9; systems='a  b'; "
              'stage_scope=${systems} run_stage 4 train; stage_scope=${systems} run_stage 5 decode; '
              'echo "after: [${stage_scope:-}]"')
    out = _bash(script)
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in (tmp_path / "times.tsv").read_text().splitlines()]
    assert [r[5:] for r in rows] == [["", "a b"], ["partial", "a b"]]
    assert "after: []" in out.stdout  # the scope holds for the call only


def test_train_launcher_gives_the_cores_to_training_only():
    script = (f"export OMP_NUM_THREADS=1; ngpu=0; ddp_cpu_procs=2; . {TEMPLATE}/utils/train_launcher.sh; "
              'set_train_launcher; echo "$nproc_train|$device|$train_threads|${launcher[*]}|$OMP_NUM_THREADS"')
    out = _bash(script)
    assert out.returncode == 0, out.stderr
    nproc_train, device, threads, launcher, jobs_threads = out.stdout.strip().split("|")
    cores = int(subprocess.run(["bash", "-c", "OMP_NUM_THREADS= nproc"], capture_output=True, text=True).stdout)
    assert (nproc_train, device, int(threads)) == ("2", "cpu", max(cores // 2, 1))
    assert launcher == f"env OMP_NUM_THREADS={threads} torchrun --standalone --nproc_per_node 2"
    assert jobs_threads == "1"  # later parallel jobs (decoding) keep one thread each


def test_path_sh_preloads_jemalloc_once_unless_told_glibc(tmp_path):
    lib = tmp_path / "libjemalloc.so.2"  # path.sh only checks that the file exists
    lib.write_bytes(b"")
    env = f"SPEECHLLM_JEMALLOC={lib} LD_PRELOAD=/other.so"
    out = _bash(f'{env}; export LD_PRELOAD; . {TEMPLATE}/path.sh; . {TEMPLATE}/path.sh; echo "$LD_PRELOAD"')
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{lib}:/other.so"  # first, and once however often path.sh is sourced
    out = _bash(f'{env} SPEECHLLM_MALLOC=glibc; export LD_PRELOAD; . {TEMPLATE}/path.sh; echo "$LD_PRELOAD"')
    assert out.stdout.strip() == "/other.so"
    out = _bash(f'SPEECHLLM_JEMALLOC={tmp_path}/missing.so; unset LD_PRELOAD; . {TEMPLATE}/path.sh; echo "[$LD_PRELOAD]"')
    assert out.stdout.strip() == "[]"  # no library, no preload: glibc's malloc
    out = _bash(f"set -e; SPEECHLLM_MALLOC=tcmalloc; . {TEMPLATE}/path.sh; echo reached")
    assert out.returncode == 1 and "reached" not in out.stdout
    assert "SPEECHLLM_MALLOC must be jemalloc or glibc, got 'tcmalloc'" in out.stderr
