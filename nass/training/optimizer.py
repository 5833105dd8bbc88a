"""The recipes' optimizer: Adam, fused into one kernel per step where every parameter is on CUDA.

SpeechBrain's recipes name ``torch.optim.Adam``, which on a GPU updates the
parameters with PyTorch's default multi-tensor (``foreach``) implementation;
``fused=True`` makes it one kernel per step (the update is the same to float
rounding: PyTorch tests the two against each other). ``fused`` needs every
parameter on CUDA (PyTorch's own check), so elsewhere the default is kept,
and a CPU run is exactly SpeechBrain's.

Example
-------
>>> import torch
>>> optimizer = adam([torch.nn.Parameter(torch.zeros(3))], lr=1e-3)
>>> type(optimizer).__name__, bool(optimizer.defaults["fused"])
('Adam', False)
"""

import torch


def adam(params, lr, **options):
    """``torch.optim.Adam(params, lr, **options)``, with ``fused=True`` when every parameter is on CUDA."""
    params = list(params)
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict)
                                                else [group])]
    if "fused" not in options and tensors and all(p.is_cuda for p in tensors):
        options["fused"] = True
    return torch.optim.Adam(params, lr=lr, **options)
