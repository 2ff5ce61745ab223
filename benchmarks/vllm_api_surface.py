"""Every name the vLLM backend gives to or reads from vLLM, checked against one vLLM version's source.

    python benchmarks/vllm_api_surface.py --vllm-source /work/cache/vllm-0.34.0 [--json out.json]

``--vllm-source`` is an unpacked vLLM wheel (the folder holding ``vllm/``) or an installed package
(``.../site-packages`` or ``.../site-packages/vllm``). Nothing of vLLM is imported: its files are
parsed with ``ast`` (the 0.34 wheel cannot be imported without CUDA torch).

What is checked comes from the backend's own source (``tandem_lm_eval/backends/vllm*.py``), by
``ast``: the keywords of its calls to ``vllm.LLM``, ``SamplingParams``, ``TokensPrompt``,
``PoolerConfig`` and ``PoolingParams``, the keys it puts in the engine arguments, the attributes it
reads off vLLM's objects (``RequestOutput``, ``CompletionOutput``, its logprobs and metrics, the
engine's configs), and the names it imports from ``vllm``. A name the backend only uses after asking
whether this vLLM has it (``has_sampling_field``, ``has_engine_field``, ``getattr`` with a default,
``hasattr``) is optional: its absence turns a feature off and is reported, not a mismatch. Exit 1 on
any mismatch.

Then the engine arguments the backend would pass for the README's paper setup (R1-Distill-Qwen-32B
mentor with ``tensor_parallel_size=2``, 7B intern; GPU 0 holds the mentor's first shard and the
intern) on one GPU of ``--gpu-memory-gib`` (80): the backend itself is run against a stand-in
``vllm`` module made from this version's ``EngineArgs`` (no model loads), once with the README's
shares and once with none given (the shares the plan derives). One line per role.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import os
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BACKEND_FILES = ("vllm.py", "vllm_logprobs.py", "vllm_options.py", "vllm_memory.py")

# Which vLLM class a variable of the backend holds, per function (the backend's names for vLLM's
# objects). Attribute reads on these variables are what is checked.
VARIABLES: dict[str, dict[str, str]] = {
    "generate": {"out": "RequestOutput", "completion": "CompletionOutput"},
    "_prompt_logprobs": {"res": "RequestOutput"},
    "_prompt_logprob_start_works": {"res": "RequestOutput", "rows": "FlatLogprobs"},
    "_pooled_hidden": {"out": "PoolingRequestOutput"},
    "__init__": {"cache": "CacheConfig", "model_config": "ModelConfig"},
    "close": {"engine": "LLM"},
    "_has_row": {"rows": "FlatLogprobs"},
    "parse_prompt_logprobs": {"prompt_logprobs": "FlatLogprobs", "actual": "Logprob", "lp": "Logprob"},
    "engine_seconds": {"output": "RequestOutput", "metrics": "RequestStateStats"},
}
# Attribute chains from the engine: self.llm.llm_engine.model_config.max_model_len, ...
ROOTS = {"llm": "LLM", "_pooler": "LLM", "_pooling_engine": "LLM"}
CHAINS = {
    ("LLM", "llm_engine"): "LLMEngine",
    ("LLMEngine", "model_config"): "ModelConfig",
    ("LLMEngine", "vllm_config"): "VllmConfig",
    ("VllmConfig", "cache_config"): "CacheConfig",
    ("RequestOutput", "metrics"): "RequestStateStats",
    ("PoolingRequestOutput", "outputs"): "EmbeddingOutput",
}
# Calls whose keywords are checked against the class's fields or __init__ parameters.
CALLS = ("LLM", "SamplingParams", "TokensPrompt", "PoolerConfig", "PoolingParams")
# Functions whose dict keys are engine arguments / sampling fields.
ENGINE_ARG_FUNCTIONS = ("kv_cache_mode", "engine_args")
SAMPLING_FUNCTIONS = ("_logprob_params",)
# Not vLLM's: names on objects the backend makes itself, or transformers' configs.
SKIP_TYPES = {None}


@dataclass
class Use:
    """One name the backend gives to or reads from vLLM."""

    owner: str  # the vLLM class (or module, for imports)
    name: str
    kind: str  # keyword | attribute | import
    optional: bool
    where: str  # file:line of the first use
    present: bool | None = None


@dataclass
class Surface:
    uses: dict[tuple[str, str, str], Use] = field(default_factory=dict)

    def add(self, owner: str, name: str, kind: str, optional: bool, where: str) -> None:
        key = (owner, name, kind)
        if key in self.uses:
            self.uses[key].optional = self.uses[key].optional and optional
        else:
            self.uses[key] = Use(owner, name, kind, optional, where)


# --- what the backend uses ------------------------------------------------------------------------
def backend_surface(backend_dir: Path = ROOT / "tandem_lm_eval" / "backends") -> Surface:
    surface = Surface()
    optional_names: set[str] = set()
    trees = {}
    for name in BACKEND_FILES:
        tree = ast.parse((backend_dir / name).read_text(encoding="utf-8"))
        trees[name] = tree
        for node in ast.walk(tree):  # names the backend asks about first
            if isinstance(node, ast.Call) and _func_name(node) in ("has_sampling_field", "has_engine_field"):
                if node.args and isinstance(node.args[0], ast.Constant):
                    optional_names.add(node.args[0].value)
    for name, tree in trees.items():
        for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            _scan_function(surface, name, fn, optional_names)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vllm":
                for alias in node.names:
                    surface.add(node.module, alias.name, "import", False, f"{name}:{node.lineno}")
    return surface


def _scan_function(surface: Surface, file: str, fn: ast.FunctionDef, optional_names: set[str]) -> None:
    variables = VARIABLES.get(fn.name, {})
    for node in ast.walk(fn):
        where = f"{file}:{getattr(node, 'lineno', fn.lineno)}"
        if isinstance(node, ast.Call):
            called = _func_name(node)
            if called in CALLS:
                for kw in node.keywords:
                    if kw.arg is not None:
                        owner = "EngineArgs" if called == "LLM" else called
                        surface.add(owner, kw.arg, "keyword", kw.arg in optional_names, where)
            if (
                called in ("getattr", "hasattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
            ):
                owner = _type_of(node.args[0], variables)
                if owner not in SKIP_TYPES:
                    optional = called == "hasattr" or len(node.args) == 3
                    surface.add(owner, node.args[1].value, "attribute", optional, where)
            # engine arguments the backend sets: args[...] = / args.setdefault / args.update / args.get
            if isinstance(node.func, ast.Attribute) and _is_name(node.func.value, "args"):
                if (
                    node.func.attr in ("setdefault", "get")
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                ):
                    key = node.args[0].value
                    surface.add("EngineArgs", key, "keyword", key in optional_names, where)
                if node.func.attr == "update":
                    for kw in node.keywords:
                        if kw.arg is not None:
                            surface.add("EngineArgs", kw.arg, "keyword", kw.arg in optional_names, where)
            if called == "dict" and fn.name in SAMPLING_FUNCTIONS:
                for kw in node.keywords:
                    if kw.arg is not None:
                        surface.add("SamplingParams", kw.arg, "keyword", kw.arg in optional_names, where)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Subscript) and _is_name(target.value, "args"):
                    if isinstance(target.slice, ast.Constant):
                        key = target.slice.value
                        surface.add("EngineArgs", key, "keyword", key in optional_names, where)
        elif isinstance(node, ast.Dict) and fn.name in ENGINE_ARG_FUNCTIONS + SAMPLING_FUNCTIONS:
            owner = "SamplingParams" if fn.name in SAMPLING_FUNCTIONS else "EngineArgs"
            for key in node.keys:
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    surface.add(owner, key.value, "keyword", key.value in optional_names, where)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            owner = _type_of(node.value, variables)
            if owner not in SKIP_TYPES:
                surface.add(owner, node.attr, "attribute", False, where)


def _func_name(call: ast.Call) -> str | None:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def _is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _type_of(node: ast.AST, variables: dict[str, str]) -> str | None:
    """The vLLM class an expression holds, where the backend's names say so."""
    if isinstance(node, ast.Name):
        return variables.get(node.id)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and _is_name(node.func.value, "self")
    ):
        return ROOTS.get(node.func.attr) if node.func.attr == "_pooling_engine" else None
    if isinstance(node, ast.Subscript):  # out.outputs[0]
        inner = node.value
        if isinstance(inner, ast.Attribute) and _type_of(inner.value, variables) == "RequestOutput":
            return "CompletionOutput" if inner.attr == "outputs" else None
        return None
    if isinstance(node, ast.Attribute):
        if _is_name(node.value, "self"):
            return ROOTS.get(node.attr) if node.attr in ("llm", "_pooler") else None
        owner = _type_of(node.value, variables)
        return CHAINS.get((owner, node.attr)) if owner else None
    return None


# --- what this vLLM has ---------------------------------------------------------------------------
class Source:
    """A vLLM source tree, read with ast: its classes (with their bases) and modules."""

    def __init__(self, folder: Path) -> None:
        folder = folder.resolve()
        self.root = (
            folder if (folder / "__init__.py").is_file() and folder.name == "vllm" else folder / "vllm"
        )
        if not (self.root / "__init__.py").is_file():
            raise SystemExit(f"--vllm-source {folder}: no vllm/ package there")
        self.version = _version_of(self.root)
        self._classes: dict[str, list[tuple[Path, ast.ClassDef]]] | None = None
        self._trees: dict[Path, ast.Module] = {}

    def tree(self, path: Path) -> ast.Module:
        if path not in self._trees:
            self._trees[path] = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        return self._trees[path]

    def classes(self, name: str) -> list[tuple[Path, ast.ClassDef]]:
        if self._classes is None:
            self._classes = {}
            pattern = re.compile(r"^class (\w+)\b", re.M)
            for path in self.root.rglob("*.py"):
                text = path.read_text(encoding="utf-8", errors="replace")
                for found in set(pattern.findall(text)):
                    self._classes.setdefault(found, []).append((path, None))  # type: ignore[arg-type]
        out = []
        for path, _ in self._classes.get(name, []):
            for node in self.tree(path).body:
                if isinstance(node, ast.ClassDef) and node.name == name:
                    out.append((path, node))
        return out

    def members(self, name: str, seen: set[str] | None = None) -> set[str]:
        """Fields, methods, properties and ``self.x`` assignments of a class and its bases."""
        seen = seen if seen is not None else set()
        if name in seen:
            return set()
        seen.add(name)
        out: set[str] = set()
        for _, cls in self.classes(name):
            for node in cls.body:
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    out.add(node.target.id)
                elif isinstance(node, ast.Assign):
                    out.update(t.id for t in node.targets if isinstance(t, ast.Name))
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    out.add(node.name)
            for node in ast.walk(cls):
                for target in _assign_targets(node):
                    if isinstance(target, ast.Attribute) and _is_name(target.value, "self"):
                        out.add(target.attr)
            for base in cls.bases:
                base_name = (
                    base.id
                    if isinstance(base, ast.Name)
                    else base.attr
                    if isinstance(base, ast.Attribute)
                    else None
                )
                if isinstance(base, ast.Subscript):  # Generic[...] / PoolingRequestOutput[X]
                    inner = base.value
                    base_name = inner.id if isinstance(inner, ast.Name) else None
                if base_name:
                    out |= self.members(base_name, seen)
        return out

    def init_parameters(self, name: str) -> set[str]:
        out: set[str] = set()
        for _, cls in self.classes(name):
            for node in cls.body:
                if isinstance(node, ast.FunctionDef) and node.name == "__init__":
                    a = node.args
                    out.update(x.arg for x in a.args + a.kwonlyargs + a.posonlyargs)
        return out - {"self"}

    def module_names(self, module: str) -> set[str] | None:
        """Names a module defines, imports or lists lazily (``__all__``, a lazy-import map)."""
        parts = module.split(".")[1:]
        base = self.root.joinpath(*parts)
        path = base / "__init__.py" if (base / "__init__.py").is_file() else base.with_suffix(".py")
        if not path.is_file():
            return None
        text = path.read_text(encoding="utf-8", errors="replace")
        names = set()
        for node in ast.walk(self.tree(path)):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            for target in _assign_targets(node):
                if isinstance(target, ast.Name):
                    names.add(target.id)
        names.update(re.findall(r"[\"'](\w+)[\"']", text))  # __all__ and lazy maps
        return names

    def engine_fields(self) -> list[tuple[str, str, bool]]:
        """``EngineArgs`` fields: (name, annotation text, default is None)."""
        out = []
        for _, cls in self.classes("EngineArgs"):
            for node in cls.body:
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    default_none = isinstance(node.value, ast.Constant) and node.value.value is None
                    out.append((node.target.id, ast.unparse(node.annotation), default_none))
        return out

    def llm_keywords(self) -> list[tuple[str, str]]:
        out = []
        for _, cls in self.classes("LLM"):
            for node in cls.body:
                if isinstance(node, ast.FunctionDef) and node.name == "__init__":
                    for a in node.args.kwonlyargs:
                        out.append((a.arg, ast.unparse(a.annotation) if a.annotation else "Any"))
        return out

    def text(self, relative: str) -> str:
        path = self.root / relative
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""


def _assign_targets(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.Assign):
        return list(node.targets)
    if isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        return [node.target]
    return []


def _version_of(root: Path) -> str:
    for candidate in ("_version.py", "version.py"):
        text = (
            (root / candidate).read_text(encoding="utf-8", errors="replace")
            if (root / candidate).is_file()
            else ""
        )
        found = re.search(r"(?:__version__|version)\s*(?::\s*str)?\s*=\s*[\"']([^\"']+)[\"']", text)
        if found:
            return found.group(1)
    dist = sorted(root.parent.glob("vllm*.dist-info"))
    for d in dist:
        found = re.search(r"^Version: (.+)$", (d / "METADATA").read_text(encoding="utf-8"), re.M)
        if found:
            return found.group(1).strip()
    return "unknown"


def check(surface: Surface, source: Source) -> list[Use]:
    engine = {n for n, _, _ in source.engine_fields()} | source.init_parameters("LLM")
    cache: dict[str, set[str]] = {}
    for use in surface.uses.values():
        if use.kind == "import":
            names = source.module_names(use.owner)
            use.present = names is not None and use.name in names
        elif use.owner == "EngineArgs":
            use.present = use.name in engine
        else:
            if use.owner not in cache:
                cache[use.owner] = source.members(use.owner)
            use.present = use.name in cache[use.owner]
    return sorted(surface.uses.values(), key=lambda u: (u.owner, u.kind, u.name))


def semantics(source: Source) -> dict[str, Any]:
    """What this version does with the optional features (read from its source, not imported)."""
    sampling = source.text("sampling_params.py")
    cache = source.text("config/cache.py")
    extensible = source.text("v1/worker/extensible_kv_cache.py")
    default = re.search(r"gpu_memory_utilization: ([^\n]+)", cache)
    return {
        "prompt_logprob_start_with_prompt_logprobs": "prompt_logprob_start requires prompt_logprobs or"
        in sampling,
        "extensible_kv_cache": "enable_extensible_kv_cache" in cache,
        "extensible_cap_is_process_wide": "set_per_process_memory_fraction" in extensible,
        "gpu_memory_utilization_field": default.group(1).strip() if default else None,
    }


# --- the paper setup, as the backend would pass it ----------------------------------------------------
README_SETUP = re.compile(r"--model_args (mentor=\S+)")


def paper_setup_args(readme: Path = ROOT / "README.md") -> dict[str, str]:
    """The README's paper-setup model_args (the first ``--model_args mentor=...`` line)."""
    found = README_SETUP.search(readme.read_text(encoding="utf-8"))
    if not found:
        raise SystemExit("README.md has no paper-setup --model_args line")
    return dict(pair.split("=", 1) for pair in found.group(1).split(","))


def stand_in_vllm(source: Source, recorded: list[dict]) -> dict[str, types.ModuleType]:
    """A ``vllm`` made of this version's EngineArgs and LLM keywords; ``LLM`` records and stops."""
    fields = source.engine_fields()
    engine_args = dataclasses.make_dataclass(
        "EngineArgs", [(name, kind, field(default=None if none else 0)) for name, kind, none in fields]
    )

    class Recorded(Exception):
        pass

    def init(self, model: str, **kwargs: Any) -> None:
        recorded.append(dict(kwargs))
        raise Recorded("recorded")

    init.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=a)
            for n, a in source.llm_keywords()
        ]
    )
    llm = type("LLM", (), {"__init__": init})
    vllm = types.ModuleType("vllm")
    vllm.LLM = llm
    vllm.SamplingParams = type("SamplingParams", (), {"__struct_fields__": ()})
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(is_cpu=lambda: False)
    arg_utils = types.ModuleType("vllm.engine.arg_utils")
    arg_utils.EngineArgs = engine_args
    return {
        "vllm": vllm,
        "vllm.platforms": platforms,
        "vllm.engine": types.ModuleType("vllm.engine"),
        "vllm.engine.arg_utils": arg_utils,
    }


def paper_setup(source: Source, gpu_total_bytes: int) -> dict[str, Any]:
    """Per role and per case (the README's shares / none given): the engine arguments and KV-cache mode."""
    from tandem_lm_eval.backends.base import BackendError
    from tandem_lm_eval.backends.vllm_memory import RoleEngine, shared_gpu_shares
    from tandem_lm_eval.harness.config import TandemConfig

    recorded: list[dict] = []
    saved = {k: v for k, v in sys.modules.items() if k == "vllm" or k.startswith("vllm.")}
    for name in saved:
        del sys.modules[name]
    sys.modules.update(stand_in_vllm(source, recorded))
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        from tandem_lm_eval.backends import vllm_options
        from tandem_lm_eval.backends.vllm import VLLMBackend

        vllm_options.engine_fields.cache_clear()
        args = paper_setup_args()
        cases = {}
        for case, drop in (("readme", ()), ("no shares given", ("gpu_memory_utilization",))):
            given = {k: v for k, v in args.items() if not any(k.endswith("_" + d) for d in drop)}
            given.pop("classifier", None)
            cfg = TandemConfig.from_model_args(given)
            roles = {"mentor": cfg.mentor, "intern": cfg.intern}
            try:
                shares = shared_gpu_shares(
                    [RoleEngine(r, rc.model, rc.options, rc.num_params) for r, rc in roles.items()],
                    gpu_total_bytes=gpu_total_bytes,
                )
            except BackendError as exc:
                cases[case] = {"error": str(exc)}
                continue
            lines = {}
            for role, rc in roles.items():
                recorded.clear()
                try:
                    VLLMBackend(rc.model, **rc.options, **shares.get(role, {}))
                except BackendError as exc:
                    if not recorded:
                        lines[role] = {"error": str(exc)}
                        continue
                engine = recorded[-1]
                share = {
                    k: engine[k] for k in ("gpu_memory_utilization", "kv_cache_memory_bytes") if k in engine
                }
                mode = (
                    "fixed (enable_extensible_kv_cache=False)"
                    if engine.get("enable_extensible_kv_cache") is False
                    else (
                        "fixed (this vLLM has no extensible KV cache)"
                        if "enable_extensible_kv_cache" not in {n for n, _, _ in source.engine_fields()}
                        else "extensible"
                    )
                )
                lines[role] = {
                    "share": share,
                    "share_source": "derived" if role in shares else "given",
                    "kv_cache_mode": mode,
                    "engine_args": engine,
                }
            cases[case] = lines
        return cases
    finally:
        for name in [k for k in sys.modules if k == "vllm" or k.startswith("vllm.")]:
            del sys.modules[name]
        sys.modules.update(saved)


# --- the report -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--vllm-source", required=True, type=Path, help="an unpacked vLLM wheel or installed package"
    )
    parser.add_argument("--gpu-memory-gib", type=float, default=80.0, help="the GPU of the paper setup (GiB)")
    parser.add_argument("--json", type=Path, default=None, help="write the report here (default: print only)")
    args = parser.parse_args(argv)

    source = Source(args.vllm_source)
    uses = check(backend_surface(), source)
    missing = [u for u in uses if not u.present and not u.optional]
    print(f"vLLM {source.version} at {source.root}")
    print(f"{'owner':<22} {'kind':<9} {'name':<30} {'optional':<8} present  first use")
    for u in uses:
        mark = "yes" if u.present else ("ABSENT" if u.optional else "MISSING")
        print(f"{u.owner:<22} {u.kind:<9} {u.name:<30} {'yes' if u.optional else '':<8} {mark:<8} {u.where}")
    sem = semantics(source)
    print("semantics:", ", ".join(f"{k}={v}" for k, v in sem.items()))
    setup = paper_setup(source, int(args.gpu_memory_gib * (1 << 30)))
    print(
        f"paper setup (README model_args) on one {args.gpu_memory_gib:g} GiB GPU, engine arguments per role:"
    )
    for case, lines in setup.items():
        print(f"  [{case}]")
        if "error" in lines:
            print(f"  refused before any load: {lines['error']}")
            continue
        for role, line in lines.items():
            if "error" in line:
                print(f"{role}: refused: {line['error']}")
                continue
            share = ", ".join(f"{k}={v}" for k, v in line["share"].items())
            rest = ", ".join(
                f"{k}={v}" for k, v in sorted(line["engine_args"].items()) if k not in line["share"]
            )
            print(f"{role}: {share} ({line['share_source']}); KV cache: {line['kv_cache_mode']}; {rest}")
    print(
        f"{len(uses)} names checked, {len(missing)} missing"
        + (": " + ", ".join(f"{u.owner}.{u.name}" for u in missing) if missing else "")
    )
    report = {
        "vllm_version": source.version,
        "vllm_source": str(source.root),
        "uses": [dataclasses.asdict(u) for u in uses],
        "missing": [f"{u.owner}.{u.name}" for u in missing],
        "optional_absent": [f"{u.owner}.{u.name}" for u in uses if u.optional and not u.present],
        "semantics": sem,
        "gpu_memory_gib": args.gpu_memory_gib,
        "paper_setup": setup,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
