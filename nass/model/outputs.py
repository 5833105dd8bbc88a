"""What a NASS model outputs: C speakers, maybe a noise output, and how the noise is found.

One :class:`Outputs` describes a model's outputs everywhere: built by a recipe's
hparams file (``outputs:``), held by the model, asked by the objective, the
Brain, inference and the exports, and written into exported folders and ONNX
files as :meth:`Outputs.to_dict`, read back by :meth:`Outputs.from_dict`.

Example
-------
>>> outputs = Outputs(num_spks=2, noise_output=True, noise_assignment="fixed")
>>> outputs.num_outputs, outputs.noise_index, outputs.source_names
(3, 2, ['spk1', 'spk2', 'noise'])
>>> Outputs.from_dict(outputs.to_dict()) == outputs
True
>>> Outputs(2, noise_assignment="last")
Traceback (most recent call last):
    ...
ValueError: noise_assignment must be one of ('pit', 'fixed'), got 'last'
"""

from dataclasses import dataclass

from nass.audio import source_names

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
        if isinstance(self.num_spks, bool) or not isinstance(self.num_spks, (int, float)) \
                or int(self.num_spks) != self.num_spks or self.num_spks < 1:
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
    def noise_index(self):
        """The output that is the noise when that is fixed (the last), else None."""
        return self.num_outputs - 1 if self.fixed_noise else None

    @property
    def source_names(self):
        """``["spk1", .., "spkC"]``, then ``"noise"`` with the noise output (:mod:`nass.audio`'s names)."""
        return source_names(self.num_spks, self.noise_output)

    def describe(self):
        """One line saying what the outputs are, for model cards and messages.

        >>> Outputs(2, True, "pit").describe()
        '3 outputs: 2 speakers and the noise, in an order that changes from mixture to mixture'
        >>> Outputs(3, False).describe()
        '3 outputs: 3 speakers'
        """
        if not self.noise_output:
            return f"{self.num_outputs} outputs: {self.num_spks} speakers"
        if self.fixed_noise:
            return (f"{self.num_outputs} outputs: speakers 0-{self.num_spks - 1}, then the "
                    f"noise (output {self.noise_index})")
        return (f"{self.num_outputs} outputs: {self.num_spks} speakers and the noise, in an "
                f"order that changes from mixture to mixture")

    def to_dict(self):
        """The JSON/YAML form kept in exported folders and ONNX metadata."""
        return {"num_speakers": self.num_spks, "noise_output": self.noise_output,
                "noise_assignment": self.noise_assignment, "noise_index": self.noise_index}

    @classmethod
    def from_dict(cls, facts, source="the model's description"):
        """The :class:`Outputs` of :meth:`to_dict`'s form; ValueError naming ``source`` if it does not hold.

        >>> Outputs.from_dict({"num_speakers": 2, "noise_output": True,
        ...                    "noise_assignment": "fixed", "noise_index": 0}, "h.yaml")
        Traceback (most recent call last):
        ...
        ValueError: h.yaml: noise_index 0 does not fit 2 speakers + noise with noise_assignment fixed (expected 2)
        """
        if not isinstance(facts, dict) or "num_speakers" not in facts:
            raise ValueError(f"{source}: expected a mapping with num_speakers, noise_output, "
                             f"noise_assignment, noise_index; got {facts!r}")
        try:
            outputs = cls(facts["num_speakers"], facts.get("noise_output", True),
                          facts.get("noise_assignment", "pit"))
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
        if "noise_index" in facts and facts["noise_index"] != outputs.noise_index:
            kind = f"{outputs.num_spks} speakers" + (" + noise" if outputs.noise_output else "")
            raise ValueError(f"{source}: noise_index {facts['noise_index']!r} does not fit {kind} "
                             f"with noise_assignment {outputs.noise_assignment} "
                             f"(expected {outputs.noise_index})")
        return outputs
