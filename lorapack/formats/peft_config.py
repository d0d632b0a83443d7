"""adapter_config.json as PEFT writes it: field types, and its regular expressions evaluated safely.

PEFT interprets several fields as regular expressions (target_modules and exclude_modules as strings,
alpha_pattern and rank_pattern keys, layers_pattern, modules_to_save). Python's `re` can take exponential time
on a hostile pattern and cannot be interrupted, so lorapack matches them with the `regex` engine under a time
budget, and hands PEFT (in validate) a config whose patterns are already resolved to exact module names.
"""

from __future__ import annotations

import re
from typing import Any

import regex

from lorapack.errors import AdapterError

from .jsonfile import describe, is_int, is_number

PREFIX = "base_model.model."
PART = re.compile(r"^(?P<module>.+?)\.(?P<kind>lora_A\.weight|lora_B\.weight|lora_B\.bias|lora_embedding_A|"
                  r"lora_embedding_B|lora_magnitude_vector(?:\.weight)?|modules_to_save\.weight|weight|bias)$")
MATCH_SECONDS = 0.05  # per match: real patterns take microseconds on module names
MAX_RANK = 1 << 16
MAX_ALPHA = 1e6  # real alphas are at most a few thousand; beyond this the float32 scaling overflows


def _alpha(v: Any) -> bool:
    return is_number(v) and abs(v) <= MAX_ALPHA


def split_key(key: str) -> tuple[str, str] | None:
    """Adapter tensor key → (HF module name, part) — e.g. ('model.layers.0.self_attn.q_proj', 'lora_A') — or
    None when it is not a PEFT LoRA tensor."""
    name = key[len(PREFIX):] if key.startswith(PREFIX) else key
    m = PART.match(name)
    return (m["module"], m["kind"].split(".")[0]) if m else None


def check_adapter_config(c: dict[str, Any]) -> list[str]:
    """Problems with the types and values of the fields lorapack (and PEFT) read; [] when usable."""
    problems = []
    for key, ok, want in (
        ("peft_type", lambda v: isinstance(v, str), "a string"),
        ("r", lambda v: is_int(v) and 0 < v <= MAX_RANK, f"an integer from 1 to {MAX_RANK}"),
        ("lora_alpha", _alpha, f"a number within ±{MAX_ALPHA:g}"),
        ("use_rslora", lambda v: isinstance(v, bool), "true or false"),
        ("use_dora", lambda v: isinstance(v, bool), "true or false"),
        ("fan_in_fan_out", lambda v: isinstance(v, bool), "true or false"),
        ("target_modules", _names_or_regex, "a list of module names or one regular expression"),
        ("alora_invocation_tokens", lambda v: isinstance(v, list) and len(v) <= 4096
         and all(is_int(t) and 0 <= t < 2**31 for t in v), "a list of at most 4096 token ids"),
        ("invocation_string", lambda v: isinstance(v, str) and len(v) <= 65536, "a string"),
        ("target_parameters", lambda v: isinstance(v, list) and all(isinstance(t, str) and 0 < len(t) <= 256
                                                              for t in v), "a list of parameter names"),
        ("exclude_modules", _names_or_regex, "a list of module names or one regular expression"),
        ("modules_to_save", _name_list, "a list of module names"),
        ("layers_pattern", _names_or_regex, "a string or a list of strings"),
        ("layers_to_transform", lambda v: is_int(v) or (isinstance(v, list) and all(map(is_int, v))),
         "an integer or a list of integers"),
        ("alpha_pattern", lambda v: isinstance(v, dict) and all(map(_alpha, v.values())),
         f"a map of patterns to numbers within ±{MAX_ALPHA:g}"),
        ("rank_pattern", lambda v: isinstance(v, dict) and all(is_int(x) and 0 < x <= MAX_RANK
                                                                 for x in v.values()),
         f"a map of patterns to integers from 1 to {MAX_RANK}"),
    ):
        if c.get(key) is not None and not ok(c[key]):
            problems.append(f"{key} is {describe(c[key])}; expected {want}")
    if c.get("target_modules") in ([], ""):
        problems.append("target_modules is empty: the adapter adapts nothing")
    return problems or _compile_all(c)


def _name_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _names_or_regex(v: Any) -> bool:
    return isinstance(v, str) or _name_list(v)


def _compile_all(c: dict[str, Any]) -> list[str]:
    """Every pattern must compile in both engines (PEFT uses `re`)."""
    pats = [(k, p) for k in ("alpha_pattern", "rank_pattern") for p in (c.get(k) or {})]
    pats += [(k, c[k]) for k in ("target_modules", "exclude_modules", "layers_pattern") if isinstance(c.get(k), str)]
    problems = []
    for key, p in pats:
        try:
            re.compile(p)
            regex.compile(p)
        except (re.error, regex.error, RecursionError, OverflowError) as e:
            problems.append(f"{key} {describe(p)} is not a valid regular expression ({e})")
    return problems


def _match(pattern: str, text: str, key: str, shown: str) -> bool:
    try:
        return regex.match(pattern, text, timeout=MATCH_SECONDS) is not None
    except TimeoutError:
        raise AdapterError(f"{key} {describe(shown)} takes too long to match {text!r} "
                           "(catastrophic backtracking?)", hint="use plain module names as pattern keys") from None


def pattern_value(patterns: dict[str, Any], module: str, default: Any, key: str) -> Any:
    """PEFT's rule (get_pattern_key): the first key matching the end of the module name, after a dot."""
    for k, value in patterns.items():
        if _match(rf"(.*\.)?({k})$", module, key, k):
            return value
    return default


def field(c: dict[str, Any], key: str, default: Any) -> Any:
    """A field with PEFT's default when absent or null."""
    return default if c.get(key) is None else c[key]


def lora_alpha(c: dict[str, Any]) -> float:
    return float(field(c, "lora_alpha", 8))


def module_alpha(c: dict[str, Any], module: str) -> float:
    return float(pattern_value(c.get("alpha_pattern") or {}, module, lora_alpha(c), "alpha_pattern key"))


def module_rank(c: dict[str, Any], module: str) -> int:
    return int(pattern_value(c.get("rank_pattern") or {}, module, field(c, "r", 8), "rank_pattern key"))


def saved_modules(c: dict[str, Any], candidates: list[str]) -> list[str]:
    r"""The modules among `candidates` that PEFT's modules_to_save rule selects: (^|.*\.)NAME($|\..*)."""
    wanted = c.get("modules_to_save") or []
    return [m for m in candidates if any(_match(rf"(^|.*\.){w}($|\..*)", m, "modules_to_save", w) for w in wanted)]


def wrapper_owner(module: str) -> str:
    """The module a (possibly nested) PEFT ParamWrapper wraps: its name without trailing .base_layer parts."""
    while module.endswith(".base_layer"):
        module = module[: -len(".base_layer")]
    return module


def param_wrapper(c: dict[str, Any], module: str) -> bool:
    """Whether `module` holds factors of a target_parameters entry (PEFT's ParamWrapper, nested as .base_layer)."""
    owners = {t.rpartition(".")[0] for t in c.get("target_parameters") or [] if isinstance(t, str) and "." in t}
    module = wrapper_owner(module)
    return any(module == o or module.endswith("." + o) for o in owners)


def param_keys(c: dict[str, Any], module: str) -> list[str]:
    """The target_parameters keys (owner.param) a wrapper module may hold."""
    module = wrapper_owner(module)
    targets = [t for t in c.get("target_parameters") or [] if isinstance(t, str) and "." in t]
    keys = {f"{module}.{t.rpartition('.')[2]}": t for t in targets}
    return sorted(k for k, t in keys.items() if k.endswith(t))


def _renamed(new, key: str) -> str:
    """A name under `rename`, also for a parameter key whose owner module was renamed."""
    if (got := new(key, None)) is not None:
        return got
    owner, _, param = key.rpartition(".")
    return f"{new(owner, owner)}.{param}" if owner else key


def resolved_config(c: dict[str, Any], lora_modules: list[str], saved_modules: list[str],
                    rename: dict[str, str] | None = None) -> dict[str, Any]:
    """The same adapter for PEFT with every pattern resolved to exact names, so PEFT's `re` only ever sees
    escaped literals: targets are the modules the file holds factors for (what PEFT's targets select, by
    effect), and each module's alpha and rank as PEFT's pattern rules give them (matched on the names the file
    uses; `rename` then maps them to the loaded model's)."""
    new = (rename or {}).get
    out = {k: v for k, v in c.items() if k not in ("layers_pattern", "layers_to_transform", "exclude_modules")}
    # target_parameters (matched by PEFT as plain name suffixes) stay; their wrappers are not target modules
    out["target_modules"] = sorted(new(m, m) for m in lora_modules if not param_wrapper(c, m)) or None
    # a wrapper's rank and alpha are PEFT's pattern rules on the parameter's key (owner.param), not its module
    keys = [k for m in lora_modules for k in (param_keys(c, m) if param_wrapper(c, m) else [m])]
    out["alpha_pattern"] = {re.escape(_renamed(new, k)): module_alpha(c, k) for k in keys}
    out["rank_pattern"] = {re.escape(_renamed(new, k)): module_rank(c, k) for k in keys}
    out["modules_to_save"] = [re.escape(new(m, m)) for m in sorted(saved_modules)] or None
    return out
