"""Pack a trained model into one archive that decodes on its own.

The archive holds ``model.pt`` (weights only), ``config.yaml`` (the resolved training config with
paths rewritten to files inside the archive), the token list, the sentencepiece model, the CMVN
statistics and ``meta.yaml`` (toolkit version, git commit, date, source paths).

    python -m speechllm.bin.pack_model --exp_dir exp/asr_x --checkpoint exp/asr_x/valid.acc.ave.pt \
        --token_dir data/token_list/bpe300 --out packed/asr_x.tar.gz
    python -m speechllm.bin.pack_model --unpack packed/asr_x.tar.gz --out_dir /tmp/asr_x
"""
from __future__ import annotations

import argparse
import datetime
import logging
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

import speechllm
from speechllm.utils.git import git_commit
from speechllm.bin import exit_on_user_error
from speechllm.train.checkpoint import load_model_state_dict
from speechllm.utils.config import load_yaml, save_config
from speechllm.utils.logging_utils import setup_logging

log = logging.getLogger(__name__)


def pack(exp_dir: Path, checkpoint: Path, token_dir: Path, out: Path) -> Path:
    """Write the archive ``out``; returns its path."""
    config_path = exp_dir / "config.yaml"
    config = load_yaml(config_path)
    files: dict[str, Path] = {}
    tokens = token_dir / "tokens.txt"
    models = sorted(token_dir.glob("*.model"))
    for required in [checkpoint, tokens]:
        if not required.is_file():
            raise FileNotFoundError(f"pack_model: {required} not found")
    files["tokens.txt"] = tokens
    if models:
        files["tokenizer.model"] = models[0]
    stats = (config.get("normalize_conf") or {}).get("stats_file")
    if stats:
        files["cmvn.json"] = Path(stats)
        config["normalize_conf"]["stats_file"] = "cmvn.json"
    meta = {
        "speechllm_version": speechllm.__version__,
        "commit": git_commit(Path(__file__).parent),
        "packed_at": datetime.datetime.now().isoformat(timespec="seconds"),
        "source_checkpoint": str(checkpoint),
        "source_exp_dir": str(exp_dir),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        state = load_model_state_dict(checkpoint)
        torch.save(state, tmp / "model.pt")
        save_config(config, tmp / "config.yaml")
        save_config(meta, tmp / "meta.yaml")
        partial = out.with_suffix(out.suffix + ".tmp")
        with tarfile.open(partial, "w:gz") as tar:
            for name in ["model.pt", "config.yaml", "meta.yaml"]:
                tar.add(tmp / name, arcname=name)
            for name, src in files.items():
                tar.add(src, arcname=name)
        partial.replace(out)
    log.info("packed %s (%d files, %.1f MB)", out, 3 + len(files), out.stat().st_size / 1e6)
    return out


def unpack(archive: Path, out_dir: Path) -> Path:
    """Extract an archive made by :func:`pack`; returns the directory (config.yaml, model.pt, ...)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(out_dir, filter="data")
    return out_dir


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp_dir", type=Path)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--token_dir", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--unpack", type=Path, help="extract this archive into --out_dir instead")
    parser.add_argument("--out_dir", type=Path)
    args = parser.parse_args(argv)
    setup_logging()
    if args.unpack:
        if args.out_dir is None:
            parser.error("--unpack needs --out_dir")
        unpack(args.unpack, args.out_dir)
    else:
        missing = [n for n in ("exp_dir", "checkpoint", "token_dir", "out") if getattr(args, n) is None]
        if missing:
            parser.error("missing " + ", ".join("--" + n for n in missing))
        pack(args.exp_dir, args.checkpoint, args.token_dir, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
