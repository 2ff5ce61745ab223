"""LoRA fine-tuning of the intern for the ``hidden_lora`` judge (paper Appendix E, "Hidden w/ LoRA").

The paper fine-tunes the SLM with LoRA "before extracting hidden states" and does not say on which
objective. This reading: a **sufficiency-classification fine-tune**. A LoRA adapter (the ``peft``
library) on the intern plus one linear head on the hidden state the judge reads (its layer and
position) are trained together with binary cross-entropy on the stage label (1 = the intern answered
correctly from this x_t), on the training split's rows only. The head is discarded afterwards: the
judge is, as for Hidden, a classifier trained on the (now adapted) hidden states. Positives are rare
(a few percent), so the loss weighs them by negatives/positives.

The other reading, a causal-LM fine-tune on the intern's correct answers (teaching the intern, not the
judge), is documented in docs/features.md; it is one objective function away here.

Only the transformers backend trains (``HFBackend``: its model and tokenizer). The adapter is saved in
peft's format (``adapter_model.safetensors`` + ``adapter_config.json``; never pickle), and the model is
returned to its base state (``unload``) so its answers and statistics are the base intern's.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tandem_lm_eval.backends.base import BackendError, Prompt, hidden_positions
from tandem_lm_eval.backends.rendering import render_prompt_ids, segment_spans
from tandem_lm_eval.calibration.errors import TableError
from tandem_lm_eval.common.options import OptionError

logger = logging.getLogger(__name__)

OBJECTIVE = (
    "sufficiency classification: LoRA adapter + a linear head on the judge's hidden state, binary "
    "cross-entropy on the stage label (positives weighted by negatives/positives), training split only; "
    "the head is discarded"
)


@dataclass
class LoraSettings:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    epochs: float = 2.0
    learning_rate: float = 1e-4
    batch_size: int = 8
    seed: int = 42
    layer: int = -1  # the hidden_states index the head reads (-1: the last)
    position: str = "prompt_end"

    def __post_init__(self) -> None:
        if (
            self.rank < 1
            or self.alpha <= 0
            or self.epochs <= 0
            or self.learning_rate <= 0
            or self.batch_size < 1
        ):
            raise OptionError("LoRA rank, alpha, epochs, learning rate and batch size must be positive")
        if not self.target_modules:
            raise OptionError("LoRA needs target modules (e.g. q_proj,v_proj)")


@dataclass
class LoraResult:
    folder: Path
    settings: LoraSettings
    rows: int
    positives: int
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # mean training loss per epoch

    @property
    def seconds_per_row(self) -> float:
        return self.seconds / max(1, self.rows * self.settings.epochs)

    def describe(self) -> dict:
        return {
            "objective": OBJECTIVE,
            "rank": self.settings.rank,
            "alpha": self.settings.alpha,
            "dropout": self.settings.dropout,
            "target_modules": list(self.settings.target_modules),
            "epochs": self.settings.epochs,
            "steps": self.steps,
            "learning_rate": self.settings.learning_rate,
            "batch_size": self.settings.batch_size,
            "seed": self.settings.seed,
            "train_rows": self.rows,
            "train_positives": self.positives,
            "seconds": round(self.seconds, 1),
            "seconds_per_row_epoch": round(self.seconds_per_row, 4),
            "epoch_losses": [round(x, 5) for x in self.losses],
        }


def train_lora_judge(
    backend,
    prompts: Sequence[Prompt],
    labels: Sequence[int],
    settings: LoraSettings,
    out: Path,
    progress: bool = True,
) -> LoraResult:
    """Train the adapter and head on ``prompts`` (x_t of training rows) and their labels; save the
    adapter in ``out``; leave ``backend``'s model as it was. ``progress``: a bar over the rows trained
    (hours on a CPU, minutes on a GPU)."""
    try:
        import torch
        from peft import LoraConfig, get_peft_model
        from tqdm.auto import tqdm
    except ImportError as exc:
        raise BackendError(
            f"hidden_lora needs torch and peft ({exc}); pip install 'tandem-lm-eval[lora]'"
        ) from exc
    if getattr(backend, "name", "") != "hf" or not hasattr(backend, "model"):
        raise BackendError("LoRA training runs on the transformers backend: give intern_backend=hf")
    y = np.asarray(labels, dtype=np.float32)
    if len(prompts) != len(y) or not len(y):
        raise TableError("LoRA training needs one label per prompt, and some prompts")
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        raise TableError(f"LoRA training rows have one label only ({positives} of {len(y)} sufficient)")
    render = functools.partial(render_prompt_ids, backend.tokenizer)
    encoded = []
    for prompt in prompts:
        ids = render(prompt)
        spans = segment_spans(render, prompt, ids) if prompt.segments else None
        where = hidden_positions(len(ids), spans)
        if settings.position not in where:
            raise BackendError(f"position {settings.position} could not be located in a training prompt")
        encoded.append((ids, where[settings.position]))

    torch.manual_seed(settings.seed)
    base = backend.model
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
    )
    try:
        model = get_peft_model(base, config)
    except ValueError as exc:  # target modules not found in this architecture
        raise BackendError(f"LoRA: {exc}") from None
    hidden_size = int(getattr(base.config, "get_text_config", lambda: base.config)().hidden_size)
    head = torch.nn.Linear(hidden_size, 1).to(next(base.parameters()).device)
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(y) - positives) / positives))
    # the decoder alone (no vocabulary-sized LM head: its logits are not needed here)
    decoder = model.get_base_model().get_decoder() if hasattr(model.get_base_model(), "get_decoder") else None
    device = next(base.parameters()).device
    pad = backend.tokenizer.pad_token_id
    rng = np.random.default_rng(settings.seed)
    total_steps = math.ceil(settings.epochs * len(y) / settings.batch_size)
    steps, losses = 0, []
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(total=total_steps, desc="LoRA judge", unit="step", disable=not progress)
    try:
        epoch = 0
        while steps < total_steps:
            order = rng.permutation(len(y))
            running, seen = 0.0, 0
            for start in range(0, len(order), settings.batch_size):
                if steps >= total_steps:
                    break
                idx = order[start : start + settings.batch_size]
                width = max(len(encoded[i][0]) for i in idx)
                input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
                attention = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    ids = encoded[i][0]
                    input_ids[row, : len(ids)] = torch.tensor(ids)
                    attention[row, : len(ids)] = 1
                runner = decoder if decoder is not None else model
                output = runner(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    output_hidden_states=True,
                )
                states = output.hidden_states[settings.layer]
                picked = torch.stack([states[row, encoded[i][1]] for row, i in enumerate(idx)])
                logits = head(picked.float())[:, 0]
                loss = loss_fn(logits, torch.tensor(y[idx], device=device))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                steps += 1
                bar.update(1)
                running += float(loss.detach()) * len(idx)
                seen += len(idx)
            losses.append(running / max(seen, 1))
            epoch += 1
            logger.info("LoRA judge: epoch %d, mean loss %.4f (%d steps)", epoch, losses[-1], steps)
        seconds = time.perf_counter() - t0
        model.eval()
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out_dir), safe_serialization=True)
    finally:
        bar.close()
        backend.model = model.unload()  # the base model again: answers and statistics are the intern's
        backend.model.eval()
    return LoraResult(out_dir, settings, len(y), positives, steps, seconds, losses)


def settings_dict(settings: LoraSettings) -> dict:
    return asdict(settings)
