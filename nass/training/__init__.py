"""Training with SpeechBrain: the recipe runner every ``train.py`` calls (:mod:`~nass.training.recipe`),
the shared ``Brain`` (:mod:`~nass.training.brain`), augmentation, the reference's initialisation
and starting from a pretrained separator.
"""
