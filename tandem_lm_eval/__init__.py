"""tandem-lm-eval: Tandem mentor-LLM / intern-SLM collaboration as an lm-evaluation-harness model.

This module is imported at interpreter start-up by the installed ``tandem_lm_eval.pth`` hook, so it
must stay light: no lm_eval, torch or transformers imports here.
"""

__version__ = "0.1.0"
