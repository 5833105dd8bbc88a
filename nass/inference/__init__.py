"""Separating recordings: :class:`Separator` and what it is built from.

* :mod:`~nass.inference.separator`: :class:`Separator`, :class:`Sources`;
* :mod:`~nass.inference.windows`: long inputs in overlapping windows, and their length;
* :mod:`~nass.inference.memory`: the memory one window needs, traced on meta tensors;
* :mod:`~nass.inference.slices`: dual-path blocks run a slice of their sequences at a time (CPU);
* :mod:`~nass.inference.noise_id`: which output of a ``pit`` model is the noise;
* :mod:`~nass.inference.onnx_runtime`: an exported ONNX model run by ONNX Runtime;
* :mod:`~nass.inference.process`: process plumbing (a child for tracing, malloc, free memory).

Nothing here imports the training stack (:mod:`nass.training`).
"""

from nass.inference.memory import MemoryBudgetError
from nass.inference.noise_id import identify_noise, pick_noise, speech_likeness
from nass.inference.separator import Separator, Sources
from nass.inference.windows import DEFAULT_CHUNK_SECONDS

__all__ = ["DEFAULT_CHUNK_SECONDS", "MemoryBudgetError", "Separator", "Sources",
           "identify_noise", "pick_noise", "speech_likeness"]
