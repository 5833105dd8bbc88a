"""``nass separate`` on long recordings: wall time, real-time factor and peak memory.

    python benchmarks/inference.py                       # 1, 2, 5 and 10 minutes
    python benchmarks/inference.py --minutes 1 10 --chunk-seconds 8

The model is the release-size Sepformer-NASS of ``sepformer-libri2mix.yaml``
with random weights (a checkpoint is written to a temporary folder): speed and
memory do not depend on the weights. The recordings are the real speech and
noise shipped in ``nass/assets`` tiled to each length, 8 kHz. Every length is
separated by the real command (``python -m nass.cli separate``) in its own
process, whose peak resident memory is read from the kernel (``wait4``), so
each figure covers model loading, reading, separating and writing.

The last line is ``rtf_10min=<wall / audio seconds> peak_rss_mib_10min=<MiB>``
(for the longest length run).
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


def run_separate(wav, checkpoint, out_dir, chunk_seconds):
    """Wall seconds and peak RSS (MiB) of one ``nass separate`` process."""
    cmd = [sys.executable, "-m", "nass.cli", "separate", "--hparams", str(HPARAMS),
           "--checkpoint", str(checkpoint), "--out-dir", str(out_dir), "--overwrite", str(wav)]
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
    args = parser.parse_args()

    print(machine_summary())
    rows, last = [], None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = load_model(HPARAMS)
        Checkpointer(tmp / "save", {"encoder": model.encoder, "masknet": model.masknet,
                                    "decoder": model.decoder}).save_checkpoint(meta={"si-snr": 0.0})
        for minutes in args.minutes:
            wav = tmp / f"mix_{minutes:g}min.wav"
            sf.write(wav, long_mixture(minutes), RATE, subtype="PCM_16")
            wall, rss = run_separate(wav, tmp / "save", tmp / "out", args.chunk_seconds)
            rtf = wall / (minutes * 60)
            rows.append([f"{minutes:g}", f"{wall:.1f}", f"{rtf:.2f}", f"{rss:.0f}"])
            print(f"  {minutes:g} min: {wall:.1f} s, RTF {rtf:.2f}, peak RSS {rss:.0f} MiB", flush=True)
            last = (rtf, rss)
    print(format_table(["minutes", "wall s", "RTF", "peak RSS MiB"], rows))
    print(last_line(rtf_10min=last[0], peak_rss_mib_10min=last[1]))


if __name__ == "__main__":
    main()
