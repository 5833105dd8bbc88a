"""``nass separate`` on long recordings: wall time, real-time factor and peak memory.

    python benchmarks/inference.py                       # 1, 2, 5 and 10 minutes
    python benchmarks/inference.py --minutes 1 10 --chunk-seconds 8
    python benchmarks/inference.py --minutes 1 --onnx      # also the ONNX model, side by side

The model is the release-size Sepformer-NASS of ``sepformer-libri2mix.yaml``
with random weights (a checkpoint is written to a temporary folder): speed and
memory do not depend on the weights. The recordings are the real speech and
noise shipped in ``nass/assets`` tiled to each length, 8 kHz. Every length is
separated by the real command (``python -m nass.cli separate``) in its own
process, whose peak resident memory is read from the kernel (``wait4``), so
each figure covers model loading, reading, separating and writing.

With ``--onnx`` the model is also exported (``nass export --format onnx``,
checked against PyTorch with ONNX Runtime; the export time and the check are
printed) and every length is separated by ``nass separate --onnx`` right
after ``nass separate``, with the same windows and thread count.

The last line is ``rtf_10min=<wall / audio seconds> peak_rss_mib_10min=<MiB>``
(for the longest length run), plus ``onnx_rtf=<...> onnx_over_pytorch=<wall
ratio>`` for it with ``--onnx``.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from _common import REPO_ROOT, format_table, last_line, machine_summary, use_checkout

use_checkout()

import nass  # noqa: E402
from nass.inference import load_model  # noqa: E402
from speechbrain.utils.checkpoints import Checkpointer  # noqa: E402

HPARAMS = REPO_ROOT / "recipes" / "LibriMix" / "separation" / "hparams" / "sepformer-libri2mix.yaml"
ASSETS = Path(nass.__file__).parent / "assets"
RATE = 8000


def long_mixture(minutes, seed=0):
    """Two talkers and noise from the shipped recordings, tiled to ``minutes``."""
    n = int(minutes * 60 * RATE)
    rng = np.random.default_rng(seed)

    def tiled(paths):
        parts = [sf.read(p, dtype="float32")[0] for p in paths]
        out = np.concatenate([parts[i % len(parts)] for i in range(n // min(map(len, parts)) + 2)])
        return np.roll(out, int(rng.integers(RATE)))[:n]

    speech = sorted((ASSETS / "speech").glob("*.wav"))
    mix = 0.5 * tiled(speech[::2]) + 0.5 * tiled(speech[1::2]) + 0.3 * tiled(sorted((ASSETS / "noise").glob("*.wav")))
    return (0.9 * mix / np.abs(mix).max()).astype(np.float32)


def run_separate(wav, model, out_dir, chunk_seconds):
    """Wall seconds and peak RSS (MiB) of one ``nass separate`` process.

    ``model`` is a checkpoint folder, or an ``.onnx`` file (``--onnx``).
    """
    source = ["--onnx", str(model)] if str(model).endswith(".onnx") else \
        ["--hparams", str(HPARAMS), "--checkpoint", str(model)]
    cmd = [sys.executable, "-m", "nass.cli", "separate", *source,
           "--out-dir", str(out_dir), "--overwrite", str(wav)]
    if chunk_seconds is not None:
        cmd += ["--chunk-seconds", str(chunk_seconds)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"nass separate failed on {wav}: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 2, 5, 10])
    parser.add_argument("--chunk-seconds", type=float, default=None,
                        help="window length (default: nass separate's)")
    parser.add_argument("--onnx", action="store_true",
                        help="also export the model to ONNX and time nass separate --onnx")
    args = parser.parse_args()

    print(machine_summary())
    rows, last = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = load_model(HPARAMS)
        Checkpointer(tmp / "save", {"encoder": model.encoder, "masknet": model.masknet,
                                    "decoder": model.decoder}).save_checkpoint(meta={"si-snr": 0.0})
        backends = {"pytorch": tmp / "save"}
        if args.onnx:
            backends["onnx"] = export(model, tmp / "separator.onnx")
        for minutes in args.minutes:
            wav = tmp / f"mix_{minutes:g}min.wav"
            sf.write(wav, long_mixture(minutes), RATE, subtype="PCM_16")
            walls = {}
            for name, source in backends.items():
                wall, rss = run_separate(wav, source, tmp / "out", args.chunk_seconds)
                rtf = wall / (minutes * 60)
                walls[name] = wall
                rows.append([f"{minutes:g}", name, f"{wall:.1f}", f"{rtf:.2f}", f"{rss:.0f}",
                             f"{wall / walls['pytorch']:.2f}"])
                print(f"  {minutes:g} min, {name}: {wall:.1f} s, RTF {rtf:.2f}, "
                      f"peak RSS {rss:.0f} MiB", flush=True)
                last[name] = (rtf, rss, wall / walls["pytorch"])
    print(format_table(["minutes", "model", "wall s", "RTF", "peak RSS MiB", "x pytorch"], rows))
    figures = {"rtf_10min": last["pytorch"][0], "peak_rss_mib_10min": last["pytorch"][1]}
    if "onnx" in last:
        figures.update(onnx_rtf=last["onnx"][0], onnx_over_pytorch=last["onnx"][2])
    print(last_line(**figures))


def export(model, path):
    """``model`` as ONNX (``nass export --format onnx``'s function); prints time and check."""
    from nass.onnx_export import export_onnx

    start = time.perf_counter()
    report = export_onnx(model, path, RATE, window_seconds=2.0)
    checked = ", ".join(f"{n} samples {db:.1f} dB" for n, db in
                        zip(report["lengths"], report["min_sdr_db"]))
    print(f"ONNX export {time.perf_counter() - start:.0f} s; ONNX Runtime vs PyTorch, worst "
          f"output: {checked}", flush=True)
    return path


if __name__ == "__main__":
    main()
