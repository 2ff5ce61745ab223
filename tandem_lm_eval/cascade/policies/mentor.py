"""The mentor answers by itself: ``mentor_only`` and ``budget_forcing:B`` (leaderboard baselines).

``mentor_only`` is the large model alone (paper Table 1, the 32B row): the mentor answers the task's
own prompt, no insights, no intern. ``budget_forcing:B`` follows s1 (Muennighoff et al., 2025; paper
Table 6): the mentor's reasoning is cut at B tokens and the end of reasoning is forced, so it still
answers. Both run in ``mentor_answers.py``, not through the stages: these policies only carry the
settings (``answerer = "mentor"``); the stage methods describe "stage 0, nothing scored".
"""

from __future__ import annotations

from collections.abc import Sequence

from tandem_lm_eval.cascade.errors import CascadeError
from tandem_lm_eval.cascade.policies.base import StopPolicy
from tandem_lm_eval.cascade.policies.spec import NO_THRESHOLDS, ModeSyntax, PolicySpec, spec_of
from tandem_lm_eval.common.thinking import THINK_CLOSE, THINK_OPEN

#: ``budget_forcing_close=auto``: what ends a cut-off reasoning trace (``<think>...``)
THINKING_CLOSE = f"\n{THINK_CLOSE}\n\n"
#: ``budget_forcing_close=auto``: what ends a cut-off output of a model that does not think in tags
PLAIN_CLOSE = "\n\nFinal answer: "


class MentorOnlyPolicy(StopPolicy):
    name = "mentor_only"
    needs_scores = False
    answerer = "mentor"
    #: the mentor's reasoning budget in tokens (None: no cut, the task's max_gen_toks only)
    reasoning_budget: int | None = None

    def last_stage(self, num_stages: int) -> int:
        return 0

    def stop_after(self, stage: int, scores: Sequence[float]) -> bool:
        return True

    def final_stage(self, scores: Sequence[float], num_stages: int) -> int:
        return 0


class BudgetForcingPolicy(MentorOnlyPolicy):
    name = "budget_forcing"

    def __init__(self, budget: int, close: str = "auto") -> None:
        if budget < 1:
            raise CascadeError(f"the budget forcing budget must be >= 1 token, got {budget}")
        if not close:
            raise CascadeError("budget_forcing_close must be 'auto' or a non-empty text")
        self.reasoning_budget = int(budget)
        self.close = close

    def close_text(self, output: str) -> str:
        """The text forced after an output cut at the budget: the end of a thinking trace
        (``\\n</think>\\n\\n``) when the output is one, else a plain final-answer cue; or the
        ``budget_forcing_close`` text given."""
        if self.close != "auto":
            return self.close
        return THINKING_CLOSE if output.lstrip().startswith(THINK_OPEN) else PLAIN_CLOSE


def _parse_budget_forcing(mode: str, argument: str | None) -> PolicySpec:
    try:
        budget = int(argument)
    except ValueError:
        raise CascadeError(
            f"bad mode {mode!r}: use budget_forcing:<reasoning tokens>, e.g. budget_forcing:2000"
        ) from None
    BudgetForcingPolicy(budget)  # the budget's own check, now
    return PolicySpec(
        mode=mode,
        name="budget_forcing",
        answerer="mentor",
        needs_classifier=False,
        thresholds=NO_THRESHOLDS,
        options=frozenset({"budget_forcing_close"}),
        factory=lambda thresholds, options: BudgetForcingPolicy(
            budget, options.get("budget_forcing_close", "auto")
        ),
        stage_rule=MentorOnlyPolicy().last_stage,
    )


MODES = (
    ModeSyntax(
        "mentor_only", ("mentor_only",), lambda mode, argument: spec_of(MentorOnlyPolicy(), mode), order=40
    ),
    ModeSyntax(
        "budget_forcing",
        ("budget_forcing:<B>",),
        _parse_budget_forcing,
        takes_argument=True,
        order=45,
        options=("budget_forcing_close",),
    ),
)
