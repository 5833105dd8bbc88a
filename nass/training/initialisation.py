"""The start of a run from scratch: every layer re-initialised, as the reference does.

SpeechBrain's separation recipes, and the NASS reference built on them,
re-initialise the model after building it whenever no pretrained separator
is given: for each module, in the order ``encoder, decoder, masknet`` (then
the reference's ``patchsamplenet``), every layer that has
``reset_parameters`` is reset, recursively. Their recursion visits a layer
once for itself and once more for each of its ancestors below the module, so
deep layers are reset several times. Only the last reset decides the
weights, but every reset draws random numbers, so :func:`reset_recursively`
visits layers exactly as they do: the weights and the random state
afterwards are then the same as theirs for the same seed.

Example
-------
>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.Linear(3, 2)))
>>> visits = []
>>> for layer in net.modules():
...     if isinstance(layer, nn.Linear):
...         layer.reset_parameters = lambda layer=layer: visits.append(layer.out_features)
>>> reset_recursively(net)
>>> visits          # the inner Linear(3, 2) once for itself, once for its parent
[3, 2, 2]
"""


def reset_recursively(module):
    """Resets ``module`` and, for every descendant, the descendant's whole subtree.

    The visiting order is ``module`` itself, then each entry of
    ``module.modules()`` after it, each handled the same way.
    """
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
    for descendant in list(module.modules())[1:]:
        reset_recursively(descendant)


def initialise_like_reference(separator, patch_sampler=None):
    """Re-initialises a :class:`nass.model.separator.NoiseAwareSeparator` (and the patch sampler).

    The parts are reset in the order of the reference's ``modules``:
    encoder, decoder, mask network, patch sampler.
    """
    for part in (separator.encoder, separator.decoder, separator.masknet, patch_sampler):
        if part is not None:
            reset_recursively(part)
