"""``tandem-lm-eval`` / ``python -m tandem_lm_eval``: the stock lm_eval CLI with tandem registered.

Same flags as ``lm_eval``. It registers the model and the task folder explicitly, so it also works
where the start-up hook is disabled (``TANDEM_LM_EVAL_NO_HOOK=1``) or the .pth file was not installed.
"""

from __future__ import annotations


def main() -> None:
    import lm_eval.tasks.manager as manager

    from ._startup import patch_task_manager, register_model

    register_model()
    patch_task_manager(manager)
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
