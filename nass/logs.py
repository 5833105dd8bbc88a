"""Logging shared by ``nass`` and the recipes: what is not worth a line on every run.

>>> import logging
>>> quiet_torchvision_note()
>>> logging.getLogger("speechbrain.utils.train_logger").filters[-1] is without_torchvision_note
True
"""

import logging


def without_torchvision_note(record):
    """Logging filter dropping SpeechBrain's note that torchvision is missing.

    SpeechBrain warns, when an hparams file's train_logger is built, that
    without torchvision it cannot save training images: nothing nass uses.
    The warning comes from a module-level statement whose logger SpeechBrain
    re-levels on import, so it is filtered rather than silenced by level.
    """
    return "torchvision" not in record.getMessage()


def quiet_torchvision_note():
    """Installs :func:`without_torchvision_note` on SpeechBrain's train_logger logger (once)."""
    logger = logging.getLogger("speechbrain.utils.train_logger")
    if without_torchvision_note not in logger.filters:
        logger.addFilter(without_torchvision_note)
