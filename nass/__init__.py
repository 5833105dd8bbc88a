"""NASS: noise-aware speech separation with patch-wise contrastive learning, on SpeechBrain.

See the README for the recipes (``recipes/``), ``nass separate`` and the library's modules.
"""

__version__ = "0.1.0"
