"""``tandem_lm_eval.model:TandemLM``, the name earlier versions registered: the model now lives in
``harness/lm.py``; this import keeps code that names the old place working."""

from tandem_lm_eval.harness.lm import TandemLM

__all__ = ["TandemLM"]
