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
