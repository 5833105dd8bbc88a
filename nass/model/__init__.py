"""The model: SpeechBrain's encoder, a mask network with C (+ noise) masks, its decoder.

* :mod:`~nass.model.separator`: :class:`NoiseAwareSeparator`;
* :mod:`~nass.model.outputs`: :class:`Outputs`, the one description of what a model outputs;
* :mod:`~nass.model.attention`: SpeechBrain's attention on PyTorch's fused kernel;
* :mod:`~nass.model.precision`: which precision runs where, and the mask network in bf16/fp16;
* :mod:`~nass.model.checkpoints`: finding checkpoints and checking that they fit;
* :mod:`~nass.model.loading`: building a model with its weights (recipe checkpoints, pretrained folders).
"""

from nass.model.outputs import Outputs
from nass.model.separator import NoiseAwareSeparator

__all__ = ["NoiseAwareSeparator", "Outputs"]
