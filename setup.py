"""speechllm: speech recognition, translation and synthesis around speech LLMs."""
from setuptools import find_packages, setup

# Pinned: torch 2.14.1 + torchaudio 2.11.0 is the pair that imports on CPU-only hosts
# (torch 2.13 CPU + torchaudio fails on libc10_cuda.so).
INSTALL_REQUIRES = [
    "torch==2.14.1",
    "torchaudio==2.11.0",
    "sentencepiece",
    "kaldiio",
    "soundfile",
    "numpy",
    "pyyaml",
    "jiwer",
    "sacrebleu",
    "tensorboard",
    "tqdm",
    "matplotlib",
    "transformers>=4.40",
    "peft",
]

setup(
    name="speechllm",
    version="0.1.0",
    description="Speech LLM toolkit: ASR, AST and TTS recipes with encoders, projectors and LoRA LLMs",
    packages=find_packages(include=["speechllm", "speechllm.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={"dev": ["pytest", "pytest-timeout"]},
    entry_points={"console_scripts": []},
)
