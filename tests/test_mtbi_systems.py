"""The systems of an MTBI comparison (speechllm.bin.mtbi_systems): configs written per system,
the flags the recipe reads, and the checks that keep a comparison fair."""
from pathlib import Path

import pytest
import yaml

from speechllm.bin import mtbi_systems
from speechllm.utils.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MINI_SYSTEMS = ROOT / "egs" / "mini_synth" / "mtbi1" / "conf" / "systems.yaml"
LIBRISPEECH_SYSTEMS = ROOT / "egs" / "librispeech" / "mtbi1" / "conf" / "systems.yaml"

BASE = {"llm": None, "prompts": {"file": "p.yaml", "task": "transcribe"}, "max_epoch": 12, "batch_bins": 12000,
        "mtbi": {"targets": None, "transcribe_ratio": 0.3, "interleave_prob": 0.0}}


def _systems(tmp_path: Path, systems: dict) -> Path:
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(BASE))
    path = tmp_path / "systems.yaml"
    path.write_text(yaml.safe_dump({name: {"config": str(tmp_path / "train.yaml"), **entry}
                                    for name, entry in systems.items()}))
    return path


def test_each_system_gets_its_config_and_the_flags_the_recipe_reads(tmp_path):
    path = _systems(tmp_path, {"base": {"label": "ASR only", "args": "--mtbi null"}, "mtbi": {},
                               "il": {"args": "--mtbi.interleave_prob 0.5 --mtbi.tasks [a,b]"}})
    rows = mtbi_systems.resolve_systems(path, ["il", "base", "mtbi"], "--max_epoch 1", tmp_path / "out")
    assert [r[0] for r in rows] == ["il", "base", "mtbi"]  # the order of --systems
    flags = {r[0]: (r[1], r[3], r[4]) for r in rows}
    assert flags == {"il": ("il", "1", "1"), "base": ("ASR only", "0", "0"), "mtbi": ("mtbi", "1", "0")}
    assert rows[0][5] == "-" and rows[0][6] == "p.yaml"
    il = yaml.safe_load((tmp_path / "out" / "il.yaml").read_text())
    assert il["mtbi"]["tasks"] == ["a", "b"] and il["max_epoch"] == 12  # the common args stay on the command line
    assert yaml.safe_load((tmp_path / "out" / "base.yaml").read_text())["mtbi"] is None


def test_systems_with_another_budget_llm_or_bad_mtbi_block_are_refused(tmp_path):
    path = _systems(tmp_path, {"a": {}, "short": {"args": "--max_epoch 2"}, "other_llm": {"args": "--llm x"},
                               "bad": {"args": "--mtbi.interleave_prob 2"}})
    with pytest.raises(ConfigError, match="differ in max_epoch: a 12, short 2"):
        mtbi_systems.resolve_systems(path, ["a", "short"], "", tmp_path / "out")
    with pytest.raises(ConfigError, match="differ in llm"):
        mtbi_systems.resolve_systems(path, ["a", "other_llm"], "", tmp_path / "out")
    with pytest.raises(ConfigError, match="system bad: mtbi.interleave_prob"):
        mtbi_systems.resolve_systems(path, ["bad"], "", tmp_path / "out")
    with pytest.raises(ConfigError, match=r"unknown system\(s\) \['nope'\]"):
        mtbi_systems.resolve_systems(path, ["a", "nope"], "", tmp_path / "out")
    # a common option under a block that a system turns off would silently bring it back
    with pytest.raises(ConfigError, match=r"system base turns mtbi off \(mtbi: null\), and the common option "
                                          r"--mtbi.transcribe_ratio would bring it back"):
        mtbi_systems.resolve_systems(_systems(tmp_path, {"base": {"args": "--mtbi null"}, "a": {}}), ["a", "base"],
                                     "--mtbi.transcribe_ratio 0.5", tmp_path / "out")


@pytest.mark.parametrize("systems_file", [MINI_SYSTEMS, LIBRISPEECH_SYSTEMS], ids=["mini_synth", "librispeech"])
def test_the_recipe_systems_share_the_budget(systems_file, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(systems_file.parents[1])
    names = list(yaml.safe_load(systems_file.read_text()))
    assert mtbi_systems.main(["--systems_file", str(systems_file), "--systems", " ".join(names),
                              "--out_dir", str(tmp_path)]) == 0
    rows = {line.split("\t")[0]: line.split("\t") for line in capsys.readouterr().out.splitlines()}
    assert rows["asr_only"][3:5] == ["0", "0"] and rows["mtbi"][3:5] == ["1", "0"]
    assert all(rows[n][3:5] == ["1", "1"] for n in names if n.startswith("mtbi_il"))
    for name in names:  # a frozen-LLM system trains no LoRA and no LLM weight
        config = yaml.safe_load((tmp_path / f"{name}.yaml").read_text())
        if "frozen" in name or "ctc_text" in name:
            assert config["lora"] is None and "llm.*" in config["freeze"], name
