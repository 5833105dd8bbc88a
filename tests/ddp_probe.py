"""Runs a recipe under ``torchrun`` and saves what each process ends with, for tests/test_recipe.py.

    torchrun --nproc_per_node=2 tests/ddp_probe.py <probe folder> <hparams.yaml> [recipe args]

Writes ``<probe folder>/rank<r>.pt``: the state dict of every module the
Brain trains (DDP wrapper removed) when training starts and when it ends
(before evaluation loads the saved checkpoint), and the ids of the test
utterances this process separated.
"""

import os
import sys
from pathlib import Path

import speechbrain as sb
import torch

from nass.training.brain import SeparationBrain
from nass.training.recipe import run


def main(probe_folder, recipe_args):
    tested, states = [], {"started": {}, "trained": {}}
    compute_forward, fit = SeparationBrain.compute_forward, SeparationBrain.fit

    def recording_tests(self, batch, stage):
        if stage == sb.Stage.TEST:
            tested.extend(batch.id)
        return compute_forward(self, batch, stage)

    def record(self, when):
        for name, module in self.modules.items():
            state = getattr(module, "module", module).state_dict()
            states[when][name] = {key: value.clone() for key, value in state.items()}

    def recording_trained(self, *args, **kwargs):
        record(self, "started")
        fit(self, *args, **kwargs)
        record(self, "trained")

    SeparationBrain.compute_forward = recording_tests
    SeparationBrain.fit = recording_trained
    run(recipe_args)
    rank = int(os.environ["RANK"])
    torch.save({**states, "tested": tested}, Path(probe_folder) / f"rank{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
