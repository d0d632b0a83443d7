"""LoRA on fused expert parameters (PEFT's target_parameters → ParamWrapper), as llama.cpp's runtime applies it.

PEFT wraps each targeted 3-D parameter (experts, out, in) of a module like mlp.experts, nesting wrappers when a
module has several (the inner one saved under .base_layer). Its factors are lora_A (E·r, in), grouped by expert,
and lora_B (out, r·E), expert fastest. llama.cpp's converter refuses these ("Unprocessed experts"), yet its
runtime applies per-expert LoRA to the stacked expert matmuls (build_lora_mm_id): lora_a (E, r, in) and
lora_b (E, out, r) beside ffn_{gate,up,down}_exps. A fused gate_up_proj lands on the two stacks llama.cpp keeps
(the spec's `splits`): the same A, B's rows in halves.
"""

from __future__ import annotations

import numpy as np

from lorapack.errors import AdapterError
from lorapack.formats.peft_config import module_alpha, module_rank, param_wrapper, wrapper_owner
from lorapack.formats.safetensors import TensorRef, to_f32
from lorapack.spec import lora
from lorapack.spec.names import expert_part


def param_wrappers(config: dict, parts: dict[str, dict[str, TensorRef]]) -> dict[str, dict[str, TensorRef]]:
    """The entries of `parts` that are ParamWrapper factors: modules a target_parameters entry names."""
    return {m: k for m, k in parts.items() if param_wrapper(config, m)}



def expert_modules(config: dict, wrappers: dict[str, dict[str, TensorRef]], model) -> list:
    """LoraModules for every stacked tensor the wrappers' parameters land on."""
    from .peft import LoraModule

    params = expert_parameters(config, model)
    out = []
    for module, kinds in sorted(wrappers.items()):
        a, b = kinds.get("lora_A"), kinds.get("lora_B")
        if a is None or b is None or len(a.shape) != 2 or len(b.shape) != 2:
            raise AdapterError(f"{module}: target_parameters factors must be a 2-D lora_A and lora_B")
        for ref, label in ((a, "lora_A"), (b, "lora_B")):
            if not np.all(np.isfinite(to_f32(ref.read_raw(), ref.dtype))):
                raise AdapterError(f"{module}: {label} has non-finite values")
        owner = wrapper_owner(module)
        match = [(p, shape) for (o, p), shape in params.items() if o == owner and shape[1:] == (b.shape[0], a.shape[1])]
        if len(match) != 1:
            raise AdapterError(f"{module}: lora_A {list(a.shape)} / lora_B {list(b.shape)} fit "
                               f"{'no' if not match else 'more than one'} targeted expert parameter of {owner}")
        (param, (n_exp, n_out, _)), = match
        rank = a.shape[0] // n_exp
        if rank * n_exp != a.shape[0] or b.shape[1] != a.shape[0]:
            raise AdapterError(f"{module}: lora_A rows {a.shape[0]} are not rank × {n_exp} experts")
        # PEFT matches rank_pattern / alpha_pattern against the parameter's key, not the wrapper module
        if (want := module_rank(config, param)) != rank:
            raise AdapterError(f"{module}: adapter_config.json gives rank {want} but the factors have {rank}")
        alpha = module_alpha(config, param)
        scaling = lora.scaling(alpha, rank, bool(config.get("use_rslora")))
        pieces = model.spec.splits.get(_suffix(param))
        names = [f"{owner}.{p.rsplit('.', 1)[-1]}" for p in pieces] if pieces else [param]
        step = n_out // len(names)
        for i, stacked in enumerate(names):
            gguf_name = model.map_name(f"{stacked}.weight")[0]
            out.append(LoraModule(f"{owner}.{param.rsplit('.', 1)[-1]}", gguf_name, f"{stacked}.weight", a, b, rank,
                                  alpha, scaling, False, experts=n_exp, rows=(i * step, (i + 1) * step)))
    return out


def _suffix(param: str) -> str:
    """'model.layers.0.mlp.experts.gate_up_proj' → 'mlp.experts.gate_up_proj' (how specs key their splits)."""
    return ".".join(param.split(".")[-3:])


def expert_parameters(config: dict, model) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(owner module, its parameter's full name) → (experts, out, in), for every targeted fused parameter, from
    the checkpoint's per-expert tensors (a fused gate_up_proj: gate's rows then up's)."""
    stacks: dict[str, tuple[int, int, int]] = {}
    counts: dict[str, int] = {}
    for name, ref in model.ckpt.tensors.items():
        if (part := expert_part(model.spec.text_name(name))) is not None and len(ref.shape) == 2:
            stacks[part[0]] = ref.shape
            counts[part[0]] = counts.get(part[0], 0) + 1
    out = {}
    targets = [t for t in config.get("target_parameters") or [] if isinstance(t, str)]
    owners = {name.rsplit(".", 2)[0] for name in stacks}
    for owner in owners:
        for t in targets:
            param = f"{owner}.{t.rsplit('.', 1)[-1]}"
            if not param.endswith(t):
                continue
            pieces = model.spec.splits.get(_suffix(param))
            names = [f"{owner}.{p.rsplit('.', 1)[-1]}.weight" for p in pieces] if pieces else [f"{param}.weight"]
            if all(n in stacks for n in names):
                shapes = [stacks[n] for n in names]
                out[(owner, param)] = (counts[names[0]], sum(s[0] for s in shapes), shapes[0][1])
    return out
