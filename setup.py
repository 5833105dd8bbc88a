"""Packaging for the ``nass`` library (noise-aware speech separation on SpeechBrain)."""
from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="nass",
    version="0.1.0",
    description="Noise-aware speech separation with patch-wise contrastive learning, on SpeechBrain",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["nass", "nass.*"]),
    package_data={"nass": ["assets/*", "assets/**/*"]},
    install_requires=[
        "torch",
        "torchaudio",
        "speechbrain>=1.1",
        "hyperpyyaml",
        "numpy",
        "scipy",
        "soundfile",
        "fast_bss_eval",
        "pyloudnorm",
        "tqdm",
        "matplotlib",
    ],
    # nass export --format onnx and nass separate --onnx: pip install nass[onnx]
    extras_require={"onnx": ["onnx", "onnxscript", "onnxruntime"]},
    entry_points={"console_scripts": ["nass=nass.cli:main"]},
)
