"""``--model_args`` for ``--model tandem``: parsed and validated in one place, like vLLM's SamplingParams.

Keys without a role prefix configure the cascade. Keys ``mentor_<option>`` / ``intern_<option>`` go to
that role's backend (``mentor_dtype=bfloat16``, ``intern_gpu_memory_utilization=0.3``,
``mentor_base_url=...``); ``dtype``/``device`` without a prefix apply to both roles. Lists
(``budgets``, ``thresholds``) are written ``[100,500,1000]`` (the CLI keeps bracketed commas
together) or ``100/500/1000``.
"""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass, field, fields
from typing import Any

from tandem_lm_eval.backends import BACKENDS, backend_class
from tandem_lm_eval.cascade.policies import REGISTRY, PolicySpec, parse_mode
from tandem_lm_eval.cascade.policies.spec import FIRST_ONLY
from tandem_lm_eval.common.options import OptionError, as_bool, as_count, as_float, as_int, as_list, as_str
from tandem_lm_eval.common.paths import output_file
from tandem_lm_eval.cost.pricing import TokenPrices, parse_price

DEFAULT_BUDGETS = (100, 500, 1000)


# A model_args problem; the message names the key. The value converters raise it too.
ConfigError = OptionError


@dataclass
class RoleConfig:
    """One role (mentor or intern): which weights, which engine, and engine options."""

    model: str
    backend: str = "auto"
    num_params: float | None = None  # |θ| override for Eq. 12 (active parameters for MoE models)
    thinking: bool | None = None
    prices: TokenPrices | None = None  # $ per 1M input / output tokens (API models)
    options: dict[str, Any] = field(default_factory=dict)  # passed to the backend constructor


@dataclass
class TandemConfig:
    mentor: RoleConfig
    intern: RoleConfig
    budgets: tuple[int, ...] = DEFAULT_BUDGETS
    # mode=, parsed once (cascade/policies/spec.py): what the mode loads, reads and needs
    policy: PolicySpec = field(default_factory=lambda: parse_mode("tandem"))
    classifier: str | None = None
    thresholds: tuple[float, ...] | None = None
    # Refuse a classifier made for another intern or entropy method (False: warn and go on).
    classifier_strict: bool = True
    max_gen_toks: int = 8192
    trace_path: str | None = None
    progress: bool = True
    is_demo: bool = False
    # the top-level keys model_args gave (the plan warns about those the mode would not read)
    given: frozenset[str] = frozenset()
    # run on questions the classifier was trained on (the leakage guard refuses them by default)
    allow_training_overlap: bool = False
    # mode=budget_forcing:B: the text forced after a reasoning cut at B tokens ("auto": cascade/policies/mentor.py)
    budget_forcing_close: str = "auto"
    # The run store (store/run_store.py): a file path, or None (off). A rerun with the same store resumes.
    store: str | None = None
    # generate_until runs the cascade on this many requests at a time: memory stays bounded, and each
    # chunk's work is in the store before the next starts.
    chunk_size: int = 256
    # Under a launcher (torchrun, accelerate launch): GPUs per process, ``auto`` (the node's visible
    # GPUs split evenly among its processes), ``all`` (the launcher already isolated them) or a number.
    gpus_per_rank: str = "auto"
    # data_parallel_size=N (lm-eval's vllm name): N replicas of the whole cascade (mentor and intern each),
    # one worker process each, the requests of every call split among them (harness/replicas.py).
    data_parallel_size: int = 1

    # keys handled by lm-eval's own plumbing (never rejected)
    LM_EVAL_KEYS = ("batch_size", "max_batch_size", "device", "trust_remote_code")
    TOP_LEVEL_KEYS = (
        "mentor",
        "intern",
        "budgets",
        "mode",
        "classifier",
        "thresholds",
        "classifier_strict",
        "max_gen_toks",
        "thinking",
        "dtype",
        "trace_path",
        "progress",
        "allow_training_overlap",
        "budget_forcing_close",
        "store",
        "chunk_size",
        "gpus_per_rank",
        "data_parallel_size",
    )
    ROLE_KEYS = ("backend", "num_params", "thinking", "price_in", "price_out")

    @property
    def num_stages(self) -> int:
        return len(self.budgets) + 1

    @property
    def mode(self) -> str:
        return self.policy.mode

    @property
    def budgets_given(self) -> bool:
        """budgets came from model_args (else the run plan takes a classifier's recorded budgets)."""
        return "budgets" in self.given

    @classmethod
    def valid_keys(cls) -> list[str]:
        role = [f"{r}_{k}" for r in ("mentor", "intern") for k in cls.ROLE_KEYS]
        return sorted(
            {
                *cls.TOP_LEVEL_KEYS,
                *cls.LM_EVAL_KEYS,
                *role,
                "mentor_<backend option>",
                "intern_<backend option>",
            }
        )

    @classmethod
    def from_model_args(cls, args: dict[str, Any]) -> TandemConfig:
        args = dict(args)
        if "chat_template" in args:
            # It was accepted and never applied: say so rather than ignore it.
            raise ConfigError(
                "chat_template is not a tandem model_arg: each model always renders prompts with its "
                "own chat template (plain text for a model without one); to replace a template give "
                "mentor_chat_template= / intern_chat_template= (a Jinja file or text, vLLM backend)"
            )
        role_args: dict[str, dict[str, Any]] = {"mentor": {}, "intern": {}}
        top: dict[str, Any] = {}
        for key, value in args.items():
            if key in cls.TOP_LEVEL_KEYS or key in cls.LM_EVAL_KEYS:
                top[key] = value
                continue
            role, _, option = key.partition("_")
            if role in role_args and option:
                role_args[role][option] = value
                continue
            raise ConfigError(f"unknown model_args key {key!r}; valid keys: {', '.join(cls.valid_keys())}")

        mentor, intern = top.get("mentor"), top.get("intern")
        is_demo = mentor is None and intern is None
        if is_demo:
            mentor = intern = "demo"
        elif mentor is None or intern is None:
            missing = "mentor" if mentor is None else "intern"
            raise ConfigError(f"model_args names one role but not {missing!r}: give both mentor= and intern=")

        shared = {}
        if top.get("dtype") is not None:
            shared["dtype"] = str(top["dtype"])
        device = top.get("device")
        thinking = as_bool("thinking", top["thinking"]) if top.get("thinking") is not None else None
        roles = {}
        for role, model in (("mentor", mentor), ("intern", intern)):
            opts = role_args[role]
            rc = RoleConfig(model=as_str(role, model))
            rc.backend = as_str(f"{role}_backend", opts.pop("backend", "auto"))
            if "num_params" in opts:
                rc.num_params = float(as_count(f"{role}_num_params", opts.pop("num_params")))
            rc.thinking = (
                as_bool(f"{role}_thinking", opts.pop("thinking")) if "thinking" in opts else thinking
            )
            if "price_in" in opts or "price_out" in opts:
                if not ("price_in" in opts and "price_out" in opts):
                    raise ConfigError(f"give both {role}_price_in and {role}_price_out ($ per 1M tokens)")
                try:
                    rc.prices = TokenPrices(
                        parse_price(f"{role}_price_in", opts.pop("price_in")),
                        parse_price(f"{role}_price_out", opts.pop("price_out")),
                    )
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None
            rc.backend = resolve_backend_name(rc.backend, role)
            if rc.backend == "recorded" and role == "intern":
                raise ConfigError(
                    "intern_backend=recorded: a recorded model can only be the mentor (the intern must "
                    "score prompts and answer)"
                )
            accepted = _backend_options(role, rc.backend)
            # Shared keys (dtype) reach only the backends that take them (a server has no dtype).
            rc.options = {**{k: v for k, v in shared.items() if accepted is None or k in accepted}, **opts}
            if rc.backend == "hf":
                # lm-eval's --device and --batch_size reach the transformers backend unless set per role.
                if device is not None:
                    rc.options.setdefault("device", str(device))
                bs = top.get("batch_size")
                if bs is not None and str(bs) != "auto" and not str(bs).startswith("auto"):
                    rc.options.setdefault("batch_size", as_int("batch_size", bs, minimum=1))
            if "data_parallel_size" in rc.options and str(rc.options["data_parallel_size"]).strip() != "1":
                raise ConfigError(_role_data_parallel_message(role, rc.options["data_parallel_size"]))
            _check_backend_options(role, rc, accepted)
            roles[role] = rc

        cfg = cls(
            mentor=roles["mentor"],
            intern=roles["intern"],
            is_demo=is_demo,
            given=frozenset(k for k, v in top.items() if v is not None),
        )
        if "budgets" in top:
            cfg.budgets = tuple(as_int("budgets", b, minimum=1) for b in as_list("budgets", top["budgets"]))
            if not cfg.budgets or any(b2 <= b1 for b1, b2 in zip(cfg.budgets, cfg.budgets[1:])):
                raise ConfigError(
                    f"budgets must be increasing cumulative token counts, got {list(cfg.budgets)}"
                )
        if "mode" in top:
            try:
                cfg.policy = parse_mode(as_str("mode", top["mode"]))
                if not cfg.policy.needs_classifier:  # no classifier to bring budgets: they are final here
                    cfg.policy.last_stage(cfg.num_stages)
            except ValueError as exc:
                raise ConfigError(f"mode: {exc}") from None
        if top.get("classifier") is not None:
            cfg.classifier = as_str("classifier", top["classifier"])
        if top.get("thresholds") is not None:
            cfg.thresholds = tuple(
                as_float("thresholds", t, minimum=0, maximum=1)
                for t in as_list("thresholds", top["thresholds"])
            )
            # mode=route reads τ_0 only: one value will do
            first_only = cfg.policy.thresholds == FIRST_ONLY
            if len(cfg.thresholds) != cfg.num_stages and not (first_only and len(cfg.thresholds) == 1):
                raise ConfigError(
                    f"thresholds has {len(cfg.thresholds)} values; {cfg.num_stages} are needed "
                    f"(stage 0 = question alone, then one per budget {list(cfg.budgets)})"
                    + (f"; or one, τ_0, for mode={cfg.mode}" if first_only else "")
                )
        if "classifier_strict" in top:
            cfg.classifier_strict = as_bool("classifier_strict", top["classifier_strict"])
        if "max_gen_toks" in top:
            cfg.max_gen_toks = as_int("max_gen_toks", top["max_gen_toks"], minimum=1)
        if top.get("trace_path") is not None:
            # checked now: a folder here used to fail after the whole run's work was done
            cfg.trace_path = str(output_file("trace_path", as_str("trace_path", top["trace_path"])))
        if "progress" in top:
            cfg.progress = as_bool("progress", top["progress"])
        if "allow_training_overlap" in top:
            cfg.allow_training_overlap = as_bool("allow_training_overlap", top["allow_training_overlap"])
        if top.get("budget_forcing_close") is not None:
            cfg.budget_forcing_close = _forced_text(top["budget_forcing_close"])
        refuse_mode_options(cfg.policy, cfg.given)
        if "store" in top:
            cfg.store = _store_path(top["store"])
        if "chunk_size" in top:
            cfg.chunk_size = as_int("chunk_size", top["chunk_size"], minimum=1)
        if top.get("data_parallel_size") is not None:
            cfg.data_parallel_size = as_int("data_parallel_size", top["data_parallel_size"], minimum=1)
        if top.get("gpus_per_rank") is not None:
            text = str(top["gpus_per_rank"]).strip().lower()
            if text not in ("auto", "all"):
                try:
                    text = str(as_int("gpus_per_rank", text, minimum=1))
                except ConfigError:
                    raise ConfigError(
                        f"gpus_per_rank must be auto, all or a number of GPUs (>= 1), got {top['gpus_per_rank']!r}"
                    ) from None
            cfg.gpus_per_rank = text
        return cfg

    def public_dict(self) -> dict[str, Any]:
        """What results["config"]["tandem"] records (no secrets: backend options are reported by name)."""
        skip = ("mentor", "intern", "policy", "given")
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        out["mode"] = self.mode
        out["budgets_given"] = self.budgets_given
        for role in ("mentor", "intern"):
            rc: RoleConfig = getattr(self, role)
            out[role] = {
                "model": rc.model,
                "backend": rc.backend,
                "num_params": rc.num_params,
                "thinking": rc.thinking,
                "prices_per_million": None
                if rc.prices is None
                else [rc.prices.input_per_million, rc.prices.output_per_million],
                "options": {k: (v if "key" not in k.lower() else "<set>") for k, v in rc.options.items()},
            }
        out["budgets"] = list(self.budgets)
        out["thresholds"] = list(self.thresholds) if self.thresholds else None
        return out


def refuse_mode_options(policy: PolicySpec, given) -> None:
    """An option only some modes read (a mode file declares it in its ``ModeSyntax.options``), given to
    a mode that does not read it: refused, naming the modes that do (never recorded as used)."""
    for option in sorted(set(given) & {o for s in REGISTRY.values() for o in s.options}):
        if option not in policy.options:
            owners = " or ".join(u for s in REGISTRY.values() if option in s.options for u in s.usage)
            error = ConfigError(f"{option} applies to mode={owners} only (mode={policy.mode})")
            error.check = "mode-options"  # its kind of check (harness/plan.py CHECKS)
            raise error


def _role_data_parallel_message(role: str, value: Any) -> str:
    """A role's own data_parallel_size: a replica is the whole cascade (a mentor and an intern that
    meet on every question), so replicas are asked for once, at the top level."""
    return (
        f"{role}_data_parallel_size={value}: replicas are of the whole cascade, both roles together; give "
        f"data_parallel_size={value} (no role prefix) for {value} replicas of mentor and intern, the "
        "requests split among them (docs/scale-out.md)"
    )


def _forced_text(value: Any) -> str:
    """``budget_forcing_close``: ``auto`` or the text itself, with ``\\n`` and ``\\t`` written as
    escapes (a command line cannot hold a newline); spaces are kept."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"budget_forcing_close must be 'auto' or a non-empty text, got {value!r}")
    if value.strip() == "auto":
        return "auto"
    return value.replace("\\n", "\n").replace("\\t", "\t")


def _store_path(value: Any) -> str | None:
    """``store``: a file path, ``default`` ($TANDEM_STORE, else the cache folder's store.sqlite), or
    ``none`` (off, the default)."""
    if (
        value is None
        or value is False
        or (isinstance(value, str) and value.strip().lower() in ("", "none", "off"))
    ):
        return None
    if not isinstance(value, str):
        raise ConfigError(f"store must be a file path, 'default' or 'none', got {value!r}")
    if value.strip() == "default":
        from tandem_lm_eval.store.run_store import default_store_path

        return str(output_file("store", default_store_path(), "store.sqlite"))
    return str(output_file("store", value, "store.sqlite"))


def resolve_backend_name(name: str, role: str) -> str:
    """``auto``: vLLM when it is installed and a GPU is there, else transformers."""
    if name == "auto":
        if importlib.util.find_spec("vllm") is not None:
            try:
                import torch

                if torch.cuda.is_available():
                    return "vllm"
            except ImportError:
                pass
        return "hf"
    if name not in BACKENDS:
        raise ConfigError(
            f"{role}_backend={name!r} is not a backend; valid: auto, {', '.join(sorted(BACKENDS))}"
        )
    return name


def _backend_options(role: str, backend: str) -> list[str] | None:
    """Keyword options the backend's constructor takes; None when it takes any (**kwargs)."""
    try:
        cls = backend_class(backend)
    except Exception as exc:
        raise ConfigError(f"{role}_backend={backend}: {exc}") from exc
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return [
        n
        for n, p in params.items()
        if n not in ("self", "model") and p.kind is inspect.Parameter.KEYWORD_ONLY
    ]


def _check_backend_options(role: str, rc: RoleConfig, accepted: list[str] | None) -> None:
    """Reject options the backend's constructor does not take (backends with **kwargs check their own)."""
    if accepted is None:
        return
    for key in rc.options:
        if key not in accepted:
            raise ConfigError(
                f"unknown model_args key '{role}_{key}' for the {rc.backend} backend; its options: "
                + ", ".join(f"{role}_{a}" for a in accepted)
                + f"; role keys: {', '.join(f'{role}_{k}' for k in TandemConfig.ROLE_KEYS)}"
            )
