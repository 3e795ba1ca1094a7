"""One `transformers.Trainer` subclass for every method; the single weighted reduction lives here."""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import Trainer

from rdo.utils import atomic
from rdo.core.methods import Method, StepOutput

log = logging.getLogger("rdo.train.trainer")


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
                         "launch with `accelerate launch` or `deepspeed`.")


STAGING = "rdo-checkpoint" + atomic.TMP_TAG + "staging"  # the same name on every rank; clean_leftovers removes it



def training_autocast(args):
    """The autocast Trainer wraps each training step in (`--bf16` / `--fp16`), or nothing: what the reference
    pass and the frozen-layer cache run under, so their values are those the training steps would compute."""
    if not (args.bf16 or args.fp16):
        return nullcontext()
    return torch.autocast(device_type=args.device.type, dtype=torch.bfloat16 if args.bf16 else torch.float16)

class NonFiniteError(ValueError):
    """Too many non-finite steps in a row: training stopped (a ValueError, so the CLI prints one line)."""


class SafeTrainer(Trainer):
    """Checkpoints that appear only when complete, and optimizer steps skipped on a non-finite loss or gradient.

    - Trainer writes `checkpoint-N` file by file; here every rank writes into a staging folder, which the
      main process fsyncs and renames to `checkpoint-N` once all is there, so a checkpoint folder is
      always whole. `rows_state` (set by the command) is saved in it too (see rdo.train.resume).
    - A step whose loss (on any rank) or gradient norm is NaN/inf has its gradients dropped, so the
      optimizer leaves the weights and its moments untouched; the count is logged as `nonfinite_steps`.
      `args.max_nonfinite_steps` in a row raise NonFiniteError, naming the newest checkpoint.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows_state: dict | None = None
        self.final_model_saved = False  # set by rdo.models.save_trained once the final folder is published
        self._step_nonfinite = False
        self._nonfinite_total = 0
        self._nonfinite_run: list[int] = []

    # --- atomic checkpoints -------------------------------------------------------------------

    def _get_output_dir(self, trial):
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, STAGING) if getattr(self, "_staging", False) else run_dir

    def _save_checkpoint(self, model, trial) -> None:
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        from rdo.train.resume import CONFIG_FILE, STATE_FILE, write_rows_state

        run_dir = Path(super()._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging = run_dir / STAGING
        if self.args.should_save and staging.exists():
            atomic.clean_leftovers(run_dir)
        self.accelerator.wait_for_everyone()
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)  # writes staging/checkpoint-N; rotation there sees only it
        finally:
            self._staging = False
        self.accelerator.wait_for_everyone()  # every rank's files (RNG states, shards) are in
        if self.args.should_save:
            tmp = staging / name
            if self.state.best_model_checkpoint and STAGING in self.state.best_model_checkpoint:
                self.state.best_model_checkpoint = str(run_dir / Path(self.state.best_model_checkpoint).name)
                self.state.save_to_json(str(tmp / "trainer_state.json"))
            atomic.write_json(tmp / CONFIG_FILE, self.args.to_dict())
            if self.rows_state is not None:
                write_rows_state(tmp, self.rows_state)
            if extra := self.checkpoint_state():
                atomic.write_json(tmp / STATE_FILE, extra)
            atomic.move_into_place(tmp, run_dir / name)
            staging.rmdir()
            self._rotate(run_dir)
        self.accelerator.wait_for_everyone()

    def checkpoint_state(self) -> dict:
        """JSON-able state a subclass needs restored on resume (saved as rdo_state.json in each checkpoint)."""
        return {}

    def _rotate(self, run_dir: Path) -> None:
        from transformers.trainer_utils import rotate_checkpoints

        rotate_checkpoints(output_dir=str(run_dir), save_total_limit=self.args.save_total_limit,
                           best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if output_dir is None and self.final_model_saved:  # push_to_hub after save_trained: keep its folder as is
            return
        super().save_model(output_dir, _internal_call)

    # --- non-finite guards --------------------------------------------------------------------

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss.detach()).all():
            self._step_nonfinite = True
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        """Called once per optimizer step, just before `optimizer.step()`: the place to veto it."""
        grad_norm = super()._get_grad_norm(model, grad_norm)
        norm = float(grad_norm) if grad_norm is not None else 0.0
        flag = torch.tensor(float(self._step_nonfinite or not math.isfinite(norm)), device=self.args.device)
        self._step_nonfinite = False
        if self.accelerator.reduce(flag, reduction="sum").item() == 0:  # the same verdict on every rank
            self._nonfinite_run = []
            return grad_norm
        step = self.state.global_step + 1
        self._nonfinite_total += 1
        self._nonfinite_run.append(step)
        self.optimizer.zero_grad(set_to_none=True)  # no gradient: the optimizer skips every parameter
        log.warning("step %d: non-finite loss or gradient norm (%s); optimizer step skipped (%d in a row, %d in all)",
                    step, norm, len(self._nonfinite_run), self._nonfinite_total)
        if len(self._nonfinite_run) >= self.args.max_nonfinite_steps:
            from transformers.trainer_utils import get_last_checkpoint

            last = get_last_checkpoint(self.args.output_dir) if os.path.isdir(self.args.output_dir) else None
            raise NonFiniteError(
                f"{len(self._nonfinite_run)} optimizer steps in a row ({self._nonfinite_run[0]}-{step}) had a non-finite "
                f"loss or gradient norm (--max_nonfinite_steps {self.args.max_nonfinite_steps}); training stopped. "
                + (f"The last good checkpoint is {last}." if last else "No checkpoint was written yet.")
                + " Lower --learning_rate, check the data's coefficients, or try --bf16 instead of --fp16"
            )
        return grad_norm

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._nonfinite_total and not any(k.startswith("eval_") for k in logs):
            logs["nonfinite_steps"] = self._nonfinite_total
        super().log(logs, start_time)


class MetricsTrainer(SafeTrainer):
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
