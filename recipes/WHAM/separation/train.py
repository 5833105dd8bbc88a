#!/usr/bin/env python3
"""Trains and evaluates NASS (or its plain baseline) on WHAM! and WHAMR!.

    python train.py hparams/sepformer-wham.yaml --data_folder /path/to/wham
    python train.py hparams/sepformer-wham.yaml --data_folder /path/to/wham \
        --noise_output False --pcl_weight 0          # plain Sepformer baseline
    torchrun --nproc_per_node=2 train.py hparams/dprnn-wham.yaml --data_folder ...

The Brain (``nass.training.brain.SeparationBrain``), data preparation and evaluation
live in the ``nass`` package, shared with the LibriMix recipe; the hparams file
chooses the corpus layout, the model and every option.
"""

from nass.training.recipe import main

if __name__ == "__main__":
    main()
