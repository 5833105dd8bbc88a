#!/usr/bin/env python3
"""Trains and evaluates NASS (or its plain baseline) on Libri2Mix/Libri3Mix.

    python train.py hparams/sepformer-libri2mix.yaml --data_folder /path/to/Libri2Mix
    python train.py hparams/sepformer-libri2mix.yaml --data_folder /path/to/Libri2Mix \
        --noise_output False --pcl_weight 0          # plain Sepformer baseline
    torchrun --nproc_per_node=2 train.py hparams/dprnn-libri2mix.yaml --data_folder ...

The Brain (``nass.training.brain.SeparationBrain``), data preparation and evaluation
live in the ``nass`` package, shared with the WHAM! recipe; the hparams file
chooses the corpus layout, the model and every option.
"""

from nass.training.recipe import main

if __name__ == "__main__":
    main()
