"""Eq. 12 of the paper: the compute a request costs.

TFLOPs = 2e-12 · (|θL| · L_L + |θS| · (L_L + L_S))

L_L: tokens the mentor generated (each once: stages continue, never restart); L_S: tokens the intern
generated for the final answer. The intern's term covers reading the mentor's L_L tokens. As in the
paper, prompt tokens of the question are not counted, and neither is the intern's scoring of the
stage prompts (its prefill; the ledger reports it separately as ``intern_scored_tokens``).

The one exception to "each once": a hosted chat API that cannot continue an assistant message
regenerates the whole answer at every stage (backends/openai/backend.py). The mentor then computes
``mentor_regenerated_tokens`` R more tokens than L_L; they are counted where they were computed, in
the mentor's term: 2e-12 · (|θL| · (L_L + R) + |θS| · (L_L + L_S)). The intern still reads L_L.

A pure function over arrays or scalars: the live ledger (``ledger.py``) and the offline replay
(``calibration/replay.py``) both call it.
"""

from __future__ import annotations

import numpy as np


def tflops(
    mentor_params: float, intern_params: float, mentor_tokens, intern_tokens, mentor_regenerated_tokens=0
):
    """Eq. 12, elementwise over arrays or on scalars; ``mentor_regenerated_tokens``: tokens a mentor that
    cannot continue generated again (0 for every engine that continues)."""
    mentor_tokens = np.asarray(mentor_tokens, dtype=np.float64)
    intern_tokens = np.asarray(intern_tokens, dtype=np.float64)
    regenerated = np.asarray(mentor_regenerated_tokens, dtype=np.float64)
    if np.any(mentor_tokens < 0) or np.any(intern_tokens < 0) or np.any(regenerated < 0):
        raise ValueError("token counts must be >= 0")
    if mentor_params < 0 or intern_params < 0:
        raise ValueError("parameter counts must be >= 0")
    out = 2e-12 * (
        mentor_params * (mentor_tokens + regenerated) + intern_params * (mentor_tokens + intern_tokens)
    )
    return float(out) if out.ndim == 0 else out
