"""``tandem-lm-eval`` / ``python -m tandem_lm_eval``.

With a subcommand, the classifier workflow (docs/classifier.md), each step one command:

    tandem-lm-eval oracle-mentor  # write a recorded mentor from a task's reference solutions
    tandem-lm-eval collect        # run a pair over a task's questions, every stage, labelled
    tandem-lm-eval complete-hidden  # add the intern's hidden vectors to collected records (intern only)
    tandem-lm-eval fit            # train a sufficiency classifier, choose thresholds by an objective
    tandem-lm-eval analyze        # held-out report: per-stage P/R/F1, AUC, routing, cost (no model calls)
    tandem-lm-eval compare CONFIG # Tandem against its baselines: leaderboard and Pareto plots
    tandem-lm-eval store stats|prune|export|merge  # the run store (model_args store=): size, cleanup, export, merge

``tandem-lm-eval --help`` (``-h``) lists them. Without one, the stock lm_eval CLI with tandem registered
(same flags as ``lm_eval``; its own help: ``tandem-lm-eval run --help``). It registers the
model and the task folder explicitly, so it also works where the start-up hook is disabled
(``TANDEM_LM_EVAL_NO_HOOK=1``) or the .pth file was not installed.
"""

from __future__ import annotations

import sys

from tandem_lm_eval.cli.commands import SUBCOMMANDS, overview, run_subcommand

HELP = ("-h", "--help")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        raise SystemExit(run_subcommand(argv))
    if argv[:1] and argv[0] in HELP:  # ours; lm-eval's is `tandem-lm-eval run --help`
        print(overview())
        raise SystemExit(0)
    import lm_eval.tasks.manager as manager

    from tandem_lm_eval.harness.registration import patch_results_folder, patch_task_manager, register_model

    register_model()
    patch_task_manager(manager)
    patch_results_folder()
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
