"""How much memory a window (or a batch of windows) of separation needs, and the longest window a budget allows.

A window's peak memory is the model's weights, plus the input, plus the most
bytes the tensors of one forward pass hold at any one time. The last is found
by running the forward pass on *meta* tensors (shapes, no data) while counting
the bytes of every tensor from the moment it is made to the moment it is freed
(:class:`LiveBytes`), so the estimate follows the model as it really runs: any
block, fused or explicit attention, each part's precision, any length. Tracing
imports ``torch._dynamo`` and sympy for good, so :func:`plan_window` traces in
a forked child (:func:`nass.inference.process.in_a_child`). Scratch memory
inside one operation is not seen; how close the estimate is, measured, is in
``benchmarks/README.md`` (``benchmarks/inference.py --memory``).

Example
-------
>>> import torch
>>> from speechbrain.lobes.models.dual_path import Decoder, Dual_Path_Model, Encoder, SBRNNBlock
>>> from nass.model import NoiseAwareSeparator, Outputs
>>> block = lambda: SBRNNBlock(input_size=16, hidden_channels=8, num_layers=1, bidirectional=True)
>>> model = NoiseAwareSeparator(
...     Encoder(kernel_size=16, out_channels=16),
...     Dual_Path_Model(16, 16, block(), block(), num_layers=1, K=20, num_spks=3),
...     Decoder(in_channels=16, out_channels=1, kernel_size=16, stride=8, bias=False),
...     Outputs(num_spks=2)).eval()
>>> one, two = (forward_bytes(model, seconds * 8000) for seconds in (10, 20))
>>> round(two / one, 1)                     # an RNN's memory grows with the window
2.0
>>> budget = window_bytes(model, 15 * 8000)
>>> longest = longest_window(model, budget, shortest=16)
>>> 14.5 * 8000 <= longest <= 15 * 8000 and window_bytes(model, longest) <= budget
True
"""

import math
import weakref

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from nass.inference.process import available_memory, in_a_child

GIB = 2**30


class MemoryBudgetError(ValueError):
    """``max_memory`` is too little for even the shortest window of the model."""

# The default budget: this share of the memory available when the separator
# is made (the rest is left to the process's signals and to other programs).
AVAILABLE_SHARE = 0.8
# longest_window stops when the window is known to within this fraction.
PRECISION = 0.01


class LiveBytes(TorchFunctionMode):
    """Counts the bytes held by tensors that torch functions return, and their peak, while active.

    Tensors that share storage (views, in-place results) count once; the
    storages in ``external`` (weights, inputs) never count. Functions are
    seen as the model calls them (before PyTorch splits them into smaller
    operations), so what a function holds only while it runs is not seen,
    except for these, whose tensors are made as they would be on a CPU or a
    GPU:

    * ``scaled_dot_product_attention``: on a meta tensor PyTorch computes it
      the explicit way (attention weights of ``queries x keys``), while on a
      CPU or GPU the fused kernel only makes the output; so only the output
      is made.
    * ``multi_head_attention_forward`` (``nn.MultiheadAttention``, which
      SpeechBrain's attention calls asking for the attention weights): seen
      whole, it would hide its ``queries x keys`` weights; they are made as
      its code makes them (:meth:`_multi_head_attention`).
    * The RNN kernels of SpeechBrain's RNN blocks (``torch._VF.lstm``,
      ``gru``, ``rnn_tanh``, ``rnn_relu``): their meta versions step through
      time in Python (tens of seconds for a long window); their tensors are
      made as the CPU kernel makes them (:meth:`_rnn_layers`).
    """

    def __init__(self, external=()):
        super().__init__()
        self.external = set(external)
        self.holders = {}
        self.sizes = {}
        self.now = 0
        self.peak = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            query, value = args[0], args[2]
            result = self.hold(query.new_empty((*query.shape[:-1], value.shape[-1])))
        elif func is F.multi_head_attention_forward:
            result = self._multi_head_attention(*args, **kwargs)
        elif func in RNN_GATES and isinstance(args[1], (tuple, list)):
            result = self._rnn_layers(RNN_GATES[func], *args)
        else:
            result = func(*args, **kwargs)
            for tensor in tree_flatten(result)[0]:
                if isinstance(tensor, torch.Tensor):
                    self.hold(tensor)
        return result

    def hold(self, tensor):
        """Counts ``tensor``'s storage until the last tensor seen holding it is freed."""
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self.external:
            return tensor
        if key not in self.holders:
            self.holders[key] = 0
            self.sizes[key] = storage.nbytes()
            self.now += self.sizes[key]
            self.peak = max(self.peak, self.now)
        self.holders[key] += 1
        weakref.finalize(tensor, self._release, key)
        return tensor

    def _release(self, key):
        self.holders[key] -= 1
        if not self.holders[key]:
            del self.holders[key]
            self.now -= self.sizes.pop(key)

    def _multi_head_attention(self, query, key, value, embed_dim, num_heads, *args,
                              need_weights=True, average_attn_weights=True, **kwargs):
        """``F.multi_head_attention_forward``'s outputs, its tensors made in its order (self-attention).

        The packed input projection (made, then made contiguous), the
        queries scaled; with ``need_weights``, the attention scores and
        their softmax (``batch x heads x queries x keys`` each), else the
        fused kernel's output; the heads' outputs made contiguous, the
        output projection, and the weights averaged over heads.
        """
        queries, batch = query.shape[:2]
        keys = key.shape[0]
        projected = self.hold(query.new_empty(queries, batch, 3 * embed_dim))
        packed = self.hold(query.new_empty(3, queries, batch, embed_dim))
        del projected
        scaled = self.hold(query.new_empty(batch * num_heads, queries, embed_dim // num_heads))
        weights = None
        if need_weights:
            scores = self.hold(query.new_empty(batch * num_heads, queries, keys))
            weights = self.hold(query.new_empty(batch * num_heads, queries, keys))
            del scores
        heads = self.hold(query.new_empty(batch * num_heads, queries, embed_dim // num_heads))
        del packed, scaled
        joined = self.hold(query.new_empty(queries * batch, embed_dim))
        output = self.hold(query.new_empty(queries, batch, embed_dim))
        del heads, joined
        if weights is not None:
            weights = weights.view(batch, num_heads, queries, keys)
            if average_attn_weights:
                weights = self.hold(weights.new_empty(batch, queries, keys))
        return output, weights

    def _rnn_layers(self, gates, inputs, hx, weights, has_biases, num_layers, dropout, train,
                    bidirectional, batch_first):
        """An RNN kernel's outputs, its intermediate tensors made (and freed) in the kernel's order.

        Per layer and direction: the input's projection for every step
        (``gates x hidden`` wide), then the step outputs, stacked; the
        directions' outputs concatenated make the next layer's input.
        """
        states = list(hx)
        size = states[0].shape[-1]
        steps, batch = (inputs.shape[1], inputs.shape[0]) if batch_first else inputs.shape[:2]
        layer_input = inputs
        for _ in range(num_layers):
            outputs = []
            for _ in range(2 if bidirectional else 1):
                projection = self.hold(inputs.new_empty(steps, batch, gates * size))
                step_outputs = self.hold(inputs.new_empty(steps, batch, size))
                outputs.append(self.hold(step_outputs.clone()))
                del projection, step_outputs
            layer_input = self.hold(torch.cat(outputs, dim=-1)) if len(outputs) > 1 else outputs[0]
            del outputs
        output = layer_input.transpose(0, 1) if batch_first else layer_input
        return (output, *(self.hold(state.new_empty(state.shape)) for state in states))


# Gates per unit of each RNN kernel: the width of its input projection.
RNN_GATES = {torch._VF.lstm: 4, torch._VF.gru: 3, torch._VF.rnn_tanh: 1, torch._VF.rnn_relu: 1}


def forward_bytes(model, samples, batch=1):
    """The most bytes the tensors of ``model``'s forward pass on ``[batch, samples]`` hold at once.

    Traced on meta tensors (nothing is computed or allocated), under
    ``no_grad``, with ``model``'s own dtypes and hooks, as if on a CPU or
    a GPU (:class:`LiveBytes`).
    """
    weights = {name: torch.empty_like(value, device="meta") for name, value in
               [*model.named_parameters(), *model.named_buffers()]}
    mixture = torch.zeros(int(batch), int(samples), device="meta")
    counter = LiveBytes(external=[t.untyped_storage()._cdata
                                  for t in [mixture, *weights.values()]])
    with torch.no_grad(), counter:
        torch.func.functional_call(model, weights, (mixture,))
    return counter.peak


def weights_bytes(model):
    """Bytes of ``model``'s parameters and buffers."""
    return sum(t.numel() * t.element_size()
               for t in [*model.parameters(), *model.buffers()])


def window_bytes(model, samples, batch=1):
    """Peak bytes of separating ``batch`` windows of ``samples`` at once: weights, inputs and :func:`forward_bytes`."""
    return weights_bytes(model) + 4 * int(batch) * int(samples) + forward_bytes(model, samples, batch)


def longest_window(model, budget, shortest, upper=None):
    """The most samples, from ``shortest`` to ``upper`` (None: no bound), whose :func:`window_bytes` fit ``budget``.

    The answer is exact to :data:`PRECISION` of its length, found by
    doubling then bisection on traced estimates (a fraction of a second
    each). Returns None when not even ``shortest`` samples fit.
    """
    if window_bytes(model, shortest) > budget:
        return None
    low, high = shortest, None
    probe = upper if upper is not None else max(2 * shortest, 2**20)
    while high is None:
        if window_bytes(model, probe) <= budget:
            if probe == upper:
                return upper
            low, probe = probe, probe * 2
            if upper is not None:
                probe = min(probe, upper)
        else:
            high = probe
    while high - low > max(1, PRECISION * low):
        middle = (low + high) // 2
        if window_bytes(model, middle) <= budget:
            low = middle
        else:
            high = middle
    return low


def plan_window(model, budget, shortest, asked=None):
    """``(longest, asked_bytes, shortest_bytes)``: the window to use and the estimates to report.

    ``longest`` is :func:`longest_window` up to ``asked`` samples (None: no
    bound), None when not even ``shortest`` fits; ``asked_bytes`` and
    ``shortest_bytes`` are the :func:`window_bytes` of ``asked`` (None when
    None or when it fits) and of ``shortest``. Traced in a child process
    (:func:`in_a_child`).
    """
    return in_a_child(_plan_window, model, budget, shortest, asked)


def _plan_window(model, budget, shortest, asked):
    longest = longest_window(model, budget, shortest, upper=asked)
    asked_bytes = None if asked is None or longest == asked else window_bytes(model, asked)
    return longest, asked_bytes, window_bytes(model, shortest)


def largest_batch(model, budget, samples, most):
    """The most windows of ``samples``, up to ``most``, whose :func:`window_bytes` fit ``budget`` together.

    At least 1 (the window was planned to fit alone). Bisection on traced
    estimates, in a child process (:func:`in_a_child`).
    """
    return in_a_child(_largest_batch, model, budget, samples, most)


def _largest_batch(model, budget, samples, most):
    low, high = 1, int(most) + 1       # low fits (or is the least there is); high does not
    while high - low > 1:
        middle = (low + high) // 2
        if window_bytes(model, samples, middle) <= budget:
            low = middle
        else:
            high = middle
    return low


def default_budget(model, device):
    """Bytes for the weights and one window: the weights plus :data:`AVAILABLE_SHARE` of what is free."""
    return weights_bytes(model) + math.floor(AVAILABLE_SHARE * available_memory(device))


