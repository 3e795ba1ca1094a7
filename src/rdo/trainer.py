"""One `transformers.Trainer` subclass for every method; the single weighted reduction lives here."""

from __future__ import annotations

from collections import defaultdict

import torch
from transformers import Trainer

from rdo.methods import Method, StepOutput


def check_engine(args, accelerator) -> None:
    """Refuse a run whose requested sharding engine is silently not used.

    accelerate 1.15 switches to FSDP only for accelerator backends (not for CPU processes, where
    `--fsdp` quietly trains plain DDP), and `--deepspeed` needs the deepspeed package and a launcher.
    """
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if args.fsdp and kind != DistributedType.FSDP:
        raise ValueError(f"--fsdp is set, but accelerate runs this job as {kind.value} with {accelerator.num_processes} "
                         "process(es): FSDP needs GPUs (on CPU accelerate trains plain DDP instead). Drop --fsdp, or "
                         "launch on GPUs with `accelerate launch --config_file configs/accelerate/fsdp2.yaml`.")
    if args.deepspeed and kind != DistributedType.DEEPSPEED:
        raise ValueError(f"--deepspeed is set, but accelerate runs this job as {kind.value}: install deepspeed and "
                         "launch with `accelerate launch` or `deepspeed` on GPUs.")


class MetricsTrainer(Trainer):
    """A Trainer whose loss returns a per-batch mean and whose metrics are exact per-element means.

    Metrics are accumulated as (sum, count) over all processes — one gather per step — and logged as
    sum / count over the logging window, so batches of different sizes (or a metric empty on some
    rank) are averaged correctly, and eval metrics agree with Trainer's per-sample `eval_loss`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False  # we return a per-batch mean; Trainer divides by accumulation steps
        check_engine(self.args, self.accelerator)
        self._metrics = {"train": defaultdict(lambda: [0.0, 0.0]), "eval": defaultdict(lambda: [0.0, 0.0])}

    def record_metrics(self, model, values: dict[str, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Accumulate each metric's (sum, count); a (numerator, denominator) pair is logged as sum(num) / sum(den)."""
        mode = "train" if model.training else "eval"
        sums = torch.stack([_sum_count(v) for v in values.values()])  # (M, 2)
        sums = self.accelerator.gather(sums.unsqueeze(0)).sum(0)  # (M, 2) over processes
        for name, (total, count) in zip(values, sums.tolist()):
            acc = self._metrics[mode][name]
            acc[0] += total
            acc[1] += count

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        prefix = "eval_" if mode == "eval" else ""
        for name, (total, count) in self._metrics[mode].items():
            if count > 0:
                logs[prefix + name] = total / count
        self._metrics[mode].clear()
        super().log(logs, start_time)


def _sum_count(v) -> torch.Tensor:
    if isinstance(v, tuple):
        num, den = v
        return torch.stack([num.detach().float().sum(), den.detach().float().sum()])
    return torch.stack([v.detach().float().sum(), v.new_tensor(v.numel(), dtype=torch.float32)])


class RDOTrainer(MetricsTrainer):
    """Trains `model` with `method`'s loss, each unit weighted by its row's coefficient.

    `ref_model`: a separate live reference (only with `precompute_ref=False`). With LoRA, no
    precomputation and no separate reference, the reference is the same model with its adapter disabled.
    """

    def __init__(self, *args, method: Method, ref_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.method = method
        self.ref_model = ref_model
        if ref_model is not None:
            self.ref_model = self.accelerator.prepare_model(ref_model, evaluation_mode=True)

    # --- reference values ----------------------------------------------------------------------

    def reference(self, batch: dict) -> dict[str, torch.Tensor]:
        """Per-row reference values: precomputed columns, or a live forward without gradients."""
        cols = self.method.ref_columns
        if all(c in batch for c in cols):
            return {c: batch[c] for c in cols}
        with torch.no_grad():
            if self.ref_model is not None:
                return self.method.ref_step(self.ref_model, batch)
            model = self.accelerator.unwrap_model(self.model)
            if not hasattr(model, "disable_adapter"):
                raise RuntimeError("no reference log-probs: precompute them, pass a reference model, or train with LoRA")
            with model.disable_adapter():
                return self.method.ref_step(self.model, batch)

    # --- loss --------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        missing = [k for k in self.method.batch_fields if k not in inputs]
        if missing:
            raise RuntimeError(f"{self.method.name}: the batch lacks {missing}; its collator must produce them")
        out: StepOutput = self.method.step(self.args, model, inputs, self.reference)
        if out.losses.shape != out.weights.shape:
            raise RuntimeError(f"{self.method.name}: losses {tuple(out.losses.shape)} vs weights {tuple(out.weights.shape)}")
        n_units = out.losses.shape[0]  # rows of the batch: pairs, prompts (RRHF sums their pairs) or examples
        loss = (out.weights.to(out.losses.dtype) * out.losses).sum() / n_units  # the one weighted reduction
        if out.extra is not None:
            loss = loss + out.extra
        self._record(model, out)
        return (loss, {}) if return_outputs else loss

    def _record(self, model, out: StepOutput) -> None:
        """Log the losses under names that say what they are (README, "What is logged").

        `loss` (Trainer's key) is the objective the step minimised: mean over rows of weight x loss
        (+ RRHF's SFT term), so it moves with each batch's mean weight. `loss/unweighted` is the
        plain mean loss; `loss/weighted` is sum(w l) / sum(w), the weighted average, which does not
        (both over the logging window; for RRHF a prompt's pairs are summed, its weight their mean).
        """
        b = out.losses.shape[0]
        losses = out.losses.detach().reshape(b, -1)  # (B, units per row): 1, or RRHF's K x K pairs
        weights = out.weights.detach().to(losses.dtype).reshape(b, -1)  # (B, units per row)
        row_weight = weights.sum(1) / (weights > 0).sum(1).clamp(min=1)  # (B,) the mean weight of a row's units
        self.record_metrics(model, {
            "loss/unweighted": losses.sum(1),  # (B,)
            "loss/weighted": ((weights * losses).sum(1), row_weight),  # (B,), (B,)
            **out.metrics,
        })
