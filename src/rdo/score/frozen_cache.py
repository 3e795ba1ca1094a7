"""`--cache_frozen`: run a scorer's frozen lower layers once per sequence, not once per epoch.

With `--freeze_backbone` or `--train_top_layers N`, the layers below the trained ones get no
gradient and (dropout off) give the same output every epoch. So their output for every training
and evaluation sequence is computed once, before training, and then replayed: the frozen layers
pass their input through untouched, the last frozen one returns the stored output of the batch's
sequences, and everything above — trained layers, final norm, head, last-token pooling — runs as
the model's own code. An epoch then costs the trained layers only, so a probe or a top-layers
scorer can train for many epochs on a CPU.

Why replaying is exact: inputs are right-padded and attention is causal, so a real token's state
never depends on the padding; the stored states are the real positions', pads are zeros, which the
attention mask hides. `FrozenCache.verify` checks this on a batch against the plain forward and
the trainer falls back to the plain forward (with a warning) when it does not hold.

Memory: tokens × hidden size × 4 bytes (logged before computing). Under torchrun every process fills
the whole cache (its sampler's rows change each epoch); the fill is not split across processes.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext

import torch

from rdo.data.collate import pad_sequences
from rdo.score.scorers import decoder_layers

log = logging.getLogger("rdo.score.frozen_cache")


class _Stop(Exception):
    """Raised after the last frozen layer while filling the cache: the layers above are not needed."""


class FrozenCache:
    """The last frozen layer's output for every sequence, keyed by the sequence's token ids."""

    def __init__(self, model, n_frozen: int, pad_id: int):
        self.model, self.pad_id = model, pad_id
        self.layers = decoder_layers(model)
        if not 0 < n_frozen <= len(self.layers):
            raise ValueError(f"cannot cache {n_frozen} frozen layers of {len(self.layers)}")
        self.n_frozen = n_frozen
        self.states: dict[tuple[int, ...], torch.Tensor] = {}
        self.tuple_output = False  # whether a layer returns (hidden, ...) rather than hidden
        self._keys: list[tuple[int, ...]] | None = None
        self._handles: list = []

    # --- filling ---

    def fill(self, sequences: list[list[int]], batch_size: int = 16, autocast=nullcontext, progress: bool = True,
             again: bool = False) -> None:
        """Run every distinct sequence once up to the last frozen layer and keep its real positions' states
        (`again`: also those stored already)."""
        todo = sorted({tuple(s) for s in sequences} - (set() if again else set(self.states)), key=len)
        hidden = self.model.config.hidden_size if hasattr(self.model.config, "hidden_size") else 0
        if not again:  # (the verification batch is not worth a line)
            log.info("--cache_frozen: %d sequences through the %d frozen layers once (%.0f MiB of states)",
                     len(todo), self.n_frozen, sum(map(len, todo)) * hidden * 4 / 2**20)
        box: list = []

        def capture(module, args, output):
            self.tuple_output = isinstance(output, tuple)
            box.append(output[0] if self.tuple_output else output)
            raise _Stop

        handle = self.layers[self.n_frozen - 1].register_forward_hook(capture)
        device = next(self.model.parameters()).device
        batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
        try:
            from tqdm.auto import tqdm

            for batch in tqdm(batches, desc="frozen layers", disable=not progress):
                ids, mask = pad_sequences([list(s) for s in batch], self.pad_id)
                box.clear()
                with torch.inference_mode(), autocast():
                    try:
                        self.model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
                    except _Stop:
                        pass
                for j, s in enumerate(batch):
                    self.states[s] = box[0][j, : len(s)].float().cpu()
        finally:
            handle.remove()

    # --- replaying ---

    def install(self) -> None:
        """Lower layers pass through, the last frozen one returns the stored states of this batch."""
        self._handles.append(self.model.register_forward_pre_hook(self._remember_keys, with_kwargs=True))
        for layer in self.layers[: self.n_frozen - 1]:
            layer.forward = self._passthrough
        self.layers[self.n_frozen - 1].forward = self._replay

    def uninstall(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        for layer in self.layers[: self.n_frozen]:
            layer.__dict__.pop("forward", None)

    def _remember_keys(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if ids is None or mask is None:
            raise RuntimeError("--cache_frozen needs input_ids and attention_mask in every forward")
        self._keys = [tuple(row[m.bool()].tolist()) for row, m in zip(ids.cpu(), mask.cpu())]

    def _passthrough(self, hidden_states, *args, **kwargs):
        return (hidden_states,) if self.tuple_output else hidden_states

    def _replay(self, hidden_states, *args, **kwargs):
        out = torch.zeros_like(hidden_states)
        for j, key in enumerate(self._keys):
            state = self.states.get(key)
            if state is None:
                raise RuntimeError(f"--cache_frozen: a batch row of {len(key)} tokens was not cached before training")
            out[j, : len(key)] = state.to(out.device, out.dtype)
        return (out,) if self.tuple_output else out

    # --- checking ---

    @torch.inference_mode()
    def verify(self, sequences: list[list[int]], autocast=nullcontext) -> float:
        """Relative max |difference| of the model's outputs with and without the replay on `sequences`.

        Their states are recomputed first in this very batch, so both sides run the frozen layers on
        the same shapes: what is left is the replay itself (rows, positions, the layer cut), not the
        rounding that another batch shape gives in half precision (that is there without a cache too).
        """
        self.fill(sequences, batch_size=len(sequences), autocast=autocast, progress=False, again=True)
        device = next(self.model.parameters()).device
        ids, mask = pad_sequences(sequences, self.pad_id)
        ids, mask = ids.to(device), mask.to(device)
        with autocast():
            plain = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
            self.install()
            try:
                cached = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
            finally:
                self.uninstall()
        return float((plain - cached).abs().max() / plain.abs().max().clamp_min(1.0))
