"""Writing a trained model for others: a SpeechBrain pretrained-model folder, or ONNX.

* :mod:`nass.export.speechbrain`: ``hyperparams.yaml``, the three state dicts
  and a ``README.md`` model card, checked by loading them with SpeechBrain;
* :mod:`nass.export.onnx`: one ONNX graph, checked with ONNX Runtime.
"""

from pathlib import Path


class ExportError(ValueError):
    """An export that cannot be done as asked (existing files, an unexportable model)."""


def check_writable(out_dir, names, overwrite):
    """Raises :class:`ExportError` if ``out_dir`` is a file, or holds ``names`` and not ``overwrite``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out-dir {out_dir} is a file, not a folder")
    existing = [n for n in names if (out_dir / n).exists()]
    if existing and not overwrite:
        raise ExportError(f"{out_dir} already holds {', '.join(existing)} (use --overwrite to replace)")
