"""One side of the cascade as one object: the mentor's or the intern's engine with what the cascade
needs to know of it (its |θ| for Eq. 12, its thinking switch, its $ prices). ``Cascade`` takes two of
them; the assembly makes them from the run plan's roles (harness/plan.py: ``RolePlan``)."""

from __future__ import annotations

from dataclasses import dataclass

from tandem_lm_eval.backends.base import Backend
from tandem_lm_eval.cost.pricing import TokenPrices


@dataclass(frozen=True)
class Role:
    backend: Backend | None
    params: float = 0.0  # |θ| in Eq. 12 (0: not counted)
    thinking: bool | None = None  # the chat template's thinking switch (None: the model's default)
    prices: TokenPrices | None = None  # $ per 1M input / output tokens (API models)

    @classmethod
    def of(cls, role: Role | Backend | None) -> Role:
        """A role as given, or a bare engine as a role with no |θ|, thinking or prices (unit tests)."""
        return role if isinstance(role, Role) else cls(role)
