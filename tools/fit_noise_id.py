"""Refits the weights of ``nass.inference.noise_id`` and writes ``nass/assets/noise_id.json`` (a shipped asset).

    python tools/fit_noise_id.py --samples DIR --mixtures 20

``DIR`` is SpeechBrain's ``tests/samples`` folder. The mixtures are those of
``benchmarks/noise_pick.py`` on its ``dev`` split, with a seed of their own so
that fitting never sees the mixtures the benchmark measures; measure the
result with ``python benchmarks/noise_pick.py --samples DIR`` (``eval`` split).
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from noise_pick import LIBRIMIX, RATE, SPLITS, Library, cases  # noqa: E402  (the benchmark's mixtures)

from nass.inference.noise_id import FEATURES, MAX_Z, WEIGHTS_FILE, features, score_network  # noqa: E402


def fit(lib, n_mixtures, seed, path, hidden=8, l2=0.001):
    """Fits the weights of :func:`nass.inference.noise_id.one_voice_scores` and writes them to ``path``.

    A conditional logistic regression: over the three outputs of a mixture,
    ``softmax(-score)`` is the probability of each being the noise, and the
    cross-entropy of the true noise output (plus ``l2`` times the squared
    weights) is minimised with L-BFGS, from a seeded start; the score is
    :func:`nass.inference.noise_id.score_network` of the standardised features.
    """
    rows = torch.stack([torch.stack([features(outputs[:, k], RATE) for k in range(3)])
                        for _, outputs in cases(lib, n_mixtures, seed)])
    flat = rows.reshape(-1, rows.shape[-1])
    mean, scale = flat.mean(dim=0), flat.std(dim=0).clamp(min=1e-9)
    standardised = ((rows - mean) / scale).clamp(-MAX_Z, MAX_Z)
    generator = torch.Generator().manual_seed(seed)
    params = [(0.3 * torch.randn(len(FEATURES), hidden, generator=generator, dtype=torch.float64)),
              torch.zeros(hidden, dtype=torch.float64),
              (0.3 * torch.randn(hidden, generator=generator, dtype=torch.float64))]
    for p in params:
        p.requires_grad_()
    optimiser = torch.optim.LBFGS(params, max_iter=500, line_search_fn="strong_wolfe")
    target = torch.full((rows.shape[0],), 2)

    def loss():
        optimiser.zero_grad()
        scores = score_network(standardised, *params)
        value = (torch.nn.functional.cross_entropy(-scores, target)
                 + l2 * sum(p.pow(2).sum() for p in params))
        value.backward()
        return value

    optimiser.step(loss)
    right = (score_network(standardised, *params).argmin(dim=1) == 2).double().mean()

    def rounded(tensor):
        return torch.round(tensor.detach(), decimals=6).tolist()

    data = {
        "about": "weights of nass.inference.noise_id.one_voice_scores, written by tools/fit_noise_id.py "
                 f"on the 'dev' split, {n_mixtures} mixtures per condition, seed {seed}, "
                 f"{hidden} hidden units, l2 {l2}",
        "features": list(FEATURES),
        "mean": rounded(mean), "scale": rounded(scale),
        "hidden_weights": rounded(params[0]), "hidden_bias": rounded(params[1]),
        "weights": rounded(params[2]),
    }
    Path(path).write_text(json.dumps(data) + "\n", encoding="utf-8")
    print(f"fitted on {rows.shape[0]} mixtures ({100 * right:.1f} % of them right); wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", required=True, type=Path, help="SpeechBrain's tests/samples folder")
    parser.add_argument("--librimix", type=Path, default=LIBRIMIX,
                        help="the real-speech mini Libri2Mix (holding Libri2Mix/)")
    parser.add_argument("--mixtures", type=int, default=20, help="mixtures per condition")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    # A seed of its own, so that fitting never sees the mixtures that are measured.
    fit(Library(args.samples, args.librimix, SPLITS["dev"]), args.mixtures, args.seed + 1000,
        WEIGHTS_FILE)


if __name__ == "__main__":
    main()
