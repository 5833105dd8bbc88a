"""What a NASS model outputs: C speakers, maybe a noise output, and how the noise is found.

One :class:`Outputs` is built by a recipe's hparams file (``outputs:``) and
asked by everything that depends on it: the objective, the Brain, the recipe's
data checks and inference. It is the only place the allowed values are
checked.

Example
-------
>>> outputs = Outputs(num_spks=2, noise_output=True, noise_assignment="fixed")
>>> outputs.num_outputs, outputs.fixed_noise, outputs.source_names
(3, True, ['spk1', 'spk2', 'noise'])
>>> Outputs(2, noise_assignment="last")
Traceback (most recent call last):
    ...
ValueError: noise_assignment must be one of ('pit', 'fixed'), got 'last'
"""

from dataclasses import dataclass

NOISE_ASSIGNMENTS = ("pit", "fixed")


@dataclass(frozen=True)
class Outputs:
    """The model's outputs.

    Arguments
    ---------
    num_spks : int
        C, the number of speakers.
    noise_output : bool
        C + 1 outputs, the last target being the noise (NASS), or C (plain model).
    noise_assignment : str
        ``"pit"``: PIT over all C + 1 outputs decides which one is the noise
        (the reference's behaviour); ``"fixed"``: the last output is the noise
        and PIT permutes the speakers only.
    """

    num_spks: int
    noise_output: bool = True
    noise_assignment: str = "pit"

    def __post_init__(self):
        if isinstance(self.num_spks, bool) or int(self.num_spks) != self.num_spks or self.num_spks < 1:
            raise ValueError(f"num_spks must be a whole number >= 1, got {self.num_spks!r}")
        if not isinstance(self.noise_output, bool):
            raise ValueError(f"noise_output must be True or False, got {self.noise_output!r}")
        if self.noise_assignment not in NOISE_ASSIGNMENTS:
            raise ValueError(
                f"noise_assignment must be one of {NOISE_ASSIGNMENTS}, got {self.noise_assignment!r}"
            )
        object.__setattr__(self, "num_spks", int(self.num_spks))

    @property
    def num_outputs(self):
        """C + 1 with the noise output, C without."""
        return self.num_spks + int(self.noise_output)

    @property
    def fixed_noise(self):
        """Whether the last output is the noise by construction (PIT over the speakers only)."""
        return self.noise_output and self.noise_assignment == "fixed"

    @property
    def source_names(self):
        """``["spk1", .., "spkC"]``, then ``"noise"`` with the noise output."""
        return [f"spk{k}" for k in range(1, self.num_spks + 1)] + (
            ["noise"] if self.noise_output else []
        )
