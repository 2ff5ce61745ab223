"""The lm-eval face: ``TandemLM`` (``--model tandem``), its ``model_args`` (``config``), the assembly
of backends, classifier and policy from them, the cost metrics it adds to lm-eval's results
(``reporting``), trace records, the registration that lets the stock ``lm_eval`` command find it, and
questions read from lm-eval tasks (``task_questions``; ``task_functions`` for the task YAMLs).

May import: cascade, judgment, backends, store, cost, data, scoring, common. This file imports nothing:
the start-up hook reads ``registration`` without loading the rest.
"""
