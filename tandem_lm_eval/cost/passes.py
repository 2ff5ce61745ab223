"""Every forward pass counted: the all-passes TFLOPs reported beside Eq. 12 (``flops.py``).

Eq. 12 counts decoded tokens only (the paper's definition, and still the headline). Comparing with
methods that do not share its accounting needs every token each model processed:

    all-passes TFLOPs = 2e-12 · (|θL| · P_L + |θS| · P_S)

    P_L = the mentor's prompt prefill of every call (the question and, on an engine without a KV
          cache across calls, the prefix it continues) + L_L + R (tokens it generated again: a hosted
          chat API that cannot continue)
    P_S = the intern's scoring passes over x_t (every scored stage) + the prefill of every answer
          prompt + every answer token it generated (L_S, all of a policy's answers)

Tokens a backend served from a prefix cache (vLLM's ``num_cached_tokens``, an API's
``cached_tokens``) were not computed in this run: they are left out of P and counted apart
(``cached``: what the same passes would have cost without the cache). Where a backend cannot tell
(None), every prompt token counts as computed.

Pure functions over scalars or arrays: the live ledger (``ledger.py``) and the replay
(``calibration/replay.py``) call the same one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PassTokens:
    """Every token one request's forward passes processed, by model (scalars or (Q,) arrays)."""

    mentor_prompt: object = 0  # prefill of every mentor call (prompt + continued prefix)
    mentor_generated: object = 0  # L_L + R
    mentor_cached: object = 0  # of mentor_prompt, served from a prefix cache
    intern_scored: object = 0  # the intern's scoring passes over x_t
    intern_prompt: object = 0  # prefill of every intern answer call
    intern_generated: object = 0  # every answer token
    intern_cached: object = 0  # of intern_prompt (and scored), served from a prefix cache


@dataclass(frozen=True)
class PassTflops:
    """All-passes TFLOPs: ``computed`` (the passes this run ran) and ``cached`` (prompt tokens a prefix
    cache served, counted apart)."""

    computed: object
    cached: object


def _array(value, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if np.any(arr < 0) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite and >= 0")
    return arr


def full_pass_tflops(mentor_params: float, intern_params: float, tokens: PassTokens) -> PassTflops:
    """2e-12 · Σ over both models of |θ| · every token it processed (module docstring); elementwise over
    arrays. Cached prompt tokens are subtracted from the computed ones (never below 0) and returned
    apart."""
    if mentor_params < 0 or intern_params < 0:
        raise ValueError("parameter counts must be >= 0")
    t = {name: _array(getattr(tokens, name), name) for name in PassTokens.__dataclass_fields__}
    mentor_cached = np.minimum(t["mentor_cached"], t["mentor_prompt"])
    intern_cached = np.minimum(t["intern_cached"], t["intern_prompt"] + t["intern_scored"])
    mentor = t["mentor_prompt"] - mentor_cached + t["mentor_generated"]
    intern = t["intern_scored"] + t["intern_prompt"] - intern_cached + t["intern_generated"]
    computed = 2e-12 * (mentor_params * mentor + intern_params * intern)
    cached = 2e-12 * (mentor_params * mentor_cached + intern_params * intern_cached)
    return PassTflops(_out(computed), _out(cached))


def _out(arr: np.ndarray):
    return float(arr) if arr.ndim == 0 else arr
