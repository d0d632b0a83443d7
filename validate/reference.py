"""The reference: the unmerged PyTorch PEFT model and the safetensors source, read with their own libraries."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from lorapack.errors import AdapterError, CheckpointError, LorapackError
from lorapack.formats.hfconfig import check_config
from lorapack.formats.jsonfile import read_json
from lorapack.formats.peft_config import check_adapter_config, resolved_config, saved_modules, split_key
from lorapack.formats.safetensors import DTYPES, TensorRef, read_header, to_f32

from .names import canonical


class Source:
    """Base checkpoint tensors, read from the safetensors files with positioned reads (no memory map: pages of
    a map would stay resident and count against the validator's memory). Only safetensors are ever opened."""

    def __init__(self, base: Path):
        self.config = read_json(base / "config.json", CheckpointError)
        check_config(self.config, f"{base.name}/config.json")
        files = sorted(p for p in base.glob("model*.safetensors"))
        if not files:
            hint = "lorapack never unpickles .bin files" if list(base.glob("*.bin")) else None
            raise LorapackError(f"reference base {base} has no model*.safetensors", hint=hint)
        self._refs: dict[str, TensorRef] = {}
        for path in files:
            for name, ref in read_header(path).items():
                if name in self._refs:
                    raise CheckpointError(f"tensor {name} is stored twice in {base}")
                self._refs[name] = ref
        # the text model's names (model.layers.N…) → the checkpoint's (language_model.model.layers.N… when nested)
        self._stored = {canonical(n): n for n in self._refs}
        self._digests: dict[str, str] = {}  # stored name → sha256 of its bytes, recorded by a full read

    def names(self) -> list[str]:
        """As stored in the checkpoint."""
        return list(self._refs)

    def stored(self, name: str) -> str | None:
        """The checkpoint's name for a tensor named as stored or in the text model's terms."""
        return name if name in self._refs else self._stored.get(name)

    def has(self, name: str) -> bool:
        return self.stored(name) is not None

    def shape(self, name: str) -> tuple[int, ...]:
        return self._ref(name).shape

    def nbytes(self, name: str) -> int:
        return self._ref(name).nbytes

    def dtype(self, name: str) -> str:
        return self._ref(name).dtype

    def _ref(self, name: str) -> TensorRef:
        return self._refs[self.stored(name) or name]

    def get(self, name: str, rows: slice | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """float32 values in numpy order (rows: only those rows; out: the whole tensor into this float32 array,
        read in pieces that malloc reuses, where one fresh buffer of its size would be page-faulted in, and
        hashed on the way for the fingerprint)."""
        ref = self._ref(name)
        if out is not None and rows is None and ref.shape:
            return self.read_into(name, out)
        return to_f32(ref.read_raw(*self._span(name, rows)), ref.dtype, out).astype(np.float32, copy=False)

    def read_into(self, name: str, out: np.ndarray) -> np.ndarray:
        """The whole tensor as float32 into `out`, in row blocks (see blocks)."""
        ref = self._ref(name)
        if not ref.shape:  # a scalar
            return to_f32(ref.read_raw(), ref.dtype, out)
        for part, raw in self.blocks(name, ref.rows_per(8 << 20)):
            to_f32(raw, ref.dtype, out[part])
        return out

    def blocks(self, name: str, rows_per_block: int):
        """(rows, raw values) of the whole tensor in order, each byte read once; the bytes' sha256 is recorded
        on the way for the fingerprint, so the base checks and the fingerprint share one read."""
        ref = self._ref(name)
        h = hashlib.sha256() if ref.name not in self._digests else None
        for start in range(0, ref.rows, rows_per_block):
            stop = min(start + rows_per_block, ref.rows)
            buf = ref.read_bytes(start, stop)
            if h is not None:
                h.update(buf)
            shape = (stop - start, *ref.shape[1:]) if ref.shape else ()
            yield slice(start, stop), np.frombuffer(buf, dtype=DTYPES[ref.dtype]).reshape(shape)
        if h is not None:
            self._digests[ref.name] = h.hexdigest()

    def digest(self, name: str) -> str:
        """sha256 of the tensor's stored bytes (read now unless a full read already recorded it)."""
        ref = self._ref(name)
        if ref.name not in self._digests:
            for _ in self.blocks(name, max(1, ref.rows_per(16 << 20))):
                pass
        return self._digests[ref.name]

    def _span(self, name: str, rows: slice | None) -> tuple[int, int]:
        ref = self._ref(name)
        return (0, ref.rows) if rows is None or not ref.shape else rows.indices(ref.rows)[:2]


class PeftReference:
    """The base model with every adapter loaded, unmerged, in float32 — PEFT's own forward is the reference."""

    def __init__(self, base: Path, adapters: dict[str, Path], background: bool = False,
                 weights: Source | None = None):
        """`background`: import torch/PEFT and load the model on a thread while the caller runs the checks that
        need only numpy (importing PEFT alone takes seconds); the first use of the model waits for it.

        `weights`: build the model without its weights (every parameter a stand-in that takes no memory; PEFT
        loads the adapters as usual) and read an adapted layer's base weight from this source just while that
        layer runs, so memory does not grow with the model. Whole-model logits need weights=None."""
        self._weights = weights
        self._scratch: dict[str, np.ndarray] = {}  # parameter name → a buffer reused layer after layer
        self._holds: dict[str, str | None] = {}  # parameter name → the source tensor its buffer holds
        self._lock = threading.RLock()  # the model's parameters are swapped while a layer runs: one at a time
        # the adapters' files are checked (and their configs resolved) before torch is even imported
        tmp = tempfile.TemporaryDirectory(prefix="lorapack-ref-")
        try:
            safe = {n: safe_adapter(n, p, Path(tmp.name)) for n, p in adapters.items()}
        except BaseException:
            tmp.cleanup()
            raise
        self._error: BaseException | None = None
        self._loader = threading.Thread(target=self._load_then_clean, args=(base, safe, tmp), daemon=True)
        self._loader.start()
        if not background:
            self._wait()

    def _load_then_clean(self, base: Path, adapters: dict[str, Path], tmp) -> None:
        try:
            self._load(base, adapters)
        except BaseException as e:  # raised again in the caller's thread, at first use
            self._error = e
        finally:
            tmp.cleanup()

    def _wait(self) -> None:
        self._loader.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        import torch

        torch.set_grad_enabled(False)  # thread-local: the loader's setting does not reach the caller's thread

    def __getattr__(self, name: str):
        """The model's attributes (model, layers, saved, names) are published whole when the loader is done:
        every access waits for it (a join once it has finished costs nothing)."""
        if name.startswith("_"):
            raise AttributeError(name)
        self._wait()
        try:
            return self.__dict__["_loaded"][name]
        except KeyError:
            raise AttributeError(name) from None

    def _load(self, base: Path, adapters: dict[str, Path]) -> None:
        import torch
        import transformers
        from peft import PeftModel

        torch.set_grad_enabled(False)
        if self._weights is not None:
            # one layer at a time on a few probes: matmuls too small to share, beside the base checks' numpy
            # threads (one torch thread saved ~0.6 s of a 6.6 s Gemma 3 270M validation on 2 cores)
            torch.set_num_threads(1)
        transformers.logging.set_verbosity_error()  # the reference's loading chatter is not the user's concern
        transformers.logging.disable_progress_bar()
        lazy = self._weights is not None
        try:
            model = empty_model(base) if lazy else full_model(base)
        except Exception as e:
            raise LorapackError(f"cannot load the reference base {base} with transformers ({e})") from None
        names = list(adapters)
        if not adapters:
            self._loaded = {"names": names, "model": model.eval(), "layers": {}, "saved": {}}
            return
        first, *rest = names
        for path in adapters.values():
            align_names(path, model)
            if lazy:
                make_real(model, path)
        try:
            peft_model = PeftModel.from_pretrained(model, adapters[first], adapter_name=first).eval()
            for n in rest:
                peft_model.load_adapter(adapters[n], adapter_name=n)
        except Exception as e:
            raise LorapackError(f"cannot load the reference adapters with PEFT ({e})") from None
        peft_model.requires_grad_(False)  # no autograd graph, whichever thread runs it
        self._loaded = {"names": names, "model": peft_model, "layers": lora_layers(peft_model, names),
                        "saved": modules_to_save(peft_model, names)}

    def module_names(self) -> set[str]:
        """Every module of the (unwrapped) model, in the text model's terms."""
        model = self.model.base_model.model if self.names else self.model
        return {canonical(n) for n, _ in model.named_modules()}

    def _activate(self, adapter) -> None:
        """set_adapter walks the whole model: only call it when the active adapter changes."""
        if getattr(self, "_active", None) != adapter:
            self.model.base_model.set_adapter(adapter)
            self._active = adapter

    def contribution(self, adapter: str, module: str, x: np.ndarray) -> np.ndarray:
        """What the adapter adds at `module` for input x: PEFT's layer forward with the adapter active, minus
        the base layer. x: (N, in) float32 — token ids (N,) for embeddings."""
        import torch

        layer = self.layers[adapter][module]
        self._activate(adapter)
        inp = torch.from_numpy(x)
        # an aLoRA layer adapts only tokens marked active: mark every probe row (one token each)
        extra = {"alora_offsets": [1] * len(x)} if self.invocation_tokens(adapter) else {}
        ids = x if x.dtype.kind in "iu" else None
        with self._lock, self._base_weights(layer, module, ids), float32(layer):
            # the base layer's own output inside PEFT's forward, so W·x is not computed a second time (a copy:
            # PEFT may add to it in place, as its aLoRA forward does)
            seen = []
            hook = layer.base_layer.register_forward_hook(lambda m, args, out: seen.append((args, out.clone())))
            try:
                out = layer(inp, **extra)
            finally:
                hook.remove()
            if len(seen) == 1 and seen[0][0] and seen[0][0][0] is inp:
                base = seen[0][1]
            else:  # a variant that calls it otherwise (or not at all): run it on the probes here
                base = layer.base_layer(inp)
            return (out - base).float().numpy()

    def expert_delta(self, layer, adapter: str) -> np.ndarray:
        """ΔW (E, out, in) as PEFT's ParamWrapper computes it for its forward (scaling included), in float32: PEFT
        casts it to the parameter's dtype, which for a bf16 checkpoint would round away what is being checked."""

        base = layer.get_base_layer()
        with self._lock:  # the base checks' threads ask too, and two parts can share one wrapper (gate_up)
            return self._expert_delta(layer, base, adapter)

    def _expert_delta(self, layer, base, adapter: str) -> np.ndarray:
        import torch

        kept = dict(base._parameters)
        param = kept.get(layer.parameter_name)
        try:
            if param is not None and is_stand_in(param):  # PEFT reads only its device and dtype
                base._parameters[layer.parameter_name] = stand_in(param.shape, torch.float32)
            with float32(layer):
                return layer.get_delta_weight(adapter).float().numpy()
        finally:
            base._parameters.update(kept)

    @contextlib.contextmanager
    def _base_weights(self, layer, module: str, ids: np.ndarray | None):
        """The base layer's parameters, read from the source for as long as the layer runs (lazy model only).
        An embedding gets only the rows its probe ids look up: the rest stay untouched zero pages."""
        import torch

        base = layer.get_base_layer()
        kept = dict(base._parameters)
        try:
            for pname, p in kept.items():
                if p is not None and is_stand_in(p):
                    value = self._read(f"{module}.{pname}", tuple(p.shape), ids if pname == "weight" else None,
                                       pname)
                    base._parameters[pname] = torch.nn.Parameter(torch.from_numpy(value), requires_grad=False)
            yield
        finally:
            base._parameters.update(kept)

    def _read(self, name: str, shape: tuple[int, ...], ids: np.ndarray | None, slot: str) -> np.ndarray:
        src = self._weights
        if not src.has(name) and name == "lm_head.weight":
            name = "model.embed_tokens.weight"  # tied
        if not src.has(name):
            raise LorapackError(f"the reference base has no tensor {name} for the layer PEFT adapts")
        if tuple(src.shape(name)) != shape:
            raise LorapackError(f"the reference base stores {name} as {list(src.shape(name))}, transformers' "
                                f"model holds it as {list(shape)}")
        if ids is None:  # into one reused buffer: fresh pages for every weight would cost more than reading it
            n = int(np.prod(shape))
            if self._scratch.get(slot, np.empty(0)).size < n:
                self._scratch[slot] = np.empty(n, np.float32)
                self._holds.pop(slot, None)
            value = self._scratch[slot][:n].reshape(shape)
            if self._holds.get(slot) != name:  # the next adapter of the same layer finds it read already
                self._holds[slot] = None
                src.get(name, out=value)
                self._holds[slot] = name
            return value
        value = np.zeros(shape, np.float32)  # calloc'd: rows never written take no memory
        for row in np.unique(ids):
            value[row] = src.get(name, slice(int(row), int(row) + 1))[0]
        return value

    def invocation_tokens(self, adapter: str) -> list[int]:
        return list(getattr(self.model.peft_config[adapter], "alora_invocation_tokens", None) or [])

    def logits(self, ids: list[int], adapter: str | None) -> np.ndarray:
        import torch

        if self._weights is not None:
            raise RuntimeError("whole-model logits need the reference loaded with its weights (weights=None)")

        inp = torch.tensor([ids])
        off = adapter is None and hasattr(self.model, "disable_adapter")
        if adapter is not None and adapter is not _ACTIVE:
            self._activate(adapter)
        with float32(self.model), (self.model.disable_adapter() if off else contextlib.nullcontext()):
            return self.model(inp).logits[0].float().numpy()


    def logits_combined(self, ids: list[int], scales: dict[str, float]) -> np.ndarray:
        """Every adapter active at once, each at its scale: what a merged model should compute."""
        layers = [(layer, n) for n in scales for layer in self.layers.get(n, {}).values()]
        self.model.base_model.set_adapter(list(scales))
        self._active = None
        for layer, n in layers:
            layer.set_scale(n, scales[n])
        try:
            return self.logits(ids, adapter=None if not scales else _ACTIVE)
        finally:
            for layer, n in layers:
                layer.set_scale(n, 1.0)


_ACTIVE = object()  # logits(): keep the adapters that are already active


def lora_layers(model, names: list[str]) -> dict[str, dict[str, object]]:
    """adapter name → {module name in the text model's terms (names.canonical) → LoraLayer holding it}."""
    from peft.tuners.lora import LoraLayer

    out: dict[str, dict[str, object]] = {n: {} for n in names}
    for name, module in model.base_model.model.named_modules():
        if isinstance(module, LoraLayer):
            for n in names:
                if n in module.lora_A or n in module.lora_embedding_A:
                    out[n][canonical(name)] = module
    return out


def modules_to_save(model, names: list[str]) -> dict[str, SavedWeights]:
    """adapter name → {HF weight name → the full weight PEFT uses instead of the base one}."""
    from peft.utils import ModulesToSaveWrapper

    out: dict[str, dict[str, object]] = {n: {} for n in names}
    for name, module in model.base_model.model.named_modules():
        if isinstance(module, ModulesToSaveWrapper):
            for n in names:
                if n in module.modules_to_save:
                    out[n][f"{canonical(name)}.weight"] = module.modules_to_save[n]
    return {n: SavedWeights(modules) for n, modules in out.items()}


class SavedWeights(Mapping):
    """HF weight name → a modules_to_save weight as float32 numpy, converted when asked for (not all at once)."""

    def __init__(self, modules: dict[str, object]):
        self._modules = modules

    def __getitem__(self, name: str) -> np.ndarray:
        return self._modules[name].weight.detach().float().numpy()

    def __iter__(self):
        return iter(self._modules)

    def __len__(self) -> int:
        return len(self._modules)


class float32:
    """Evaluate a module in float32 and give it back its stored dtype (bf16 → f32 → bf16 is lossless). As
    module.float(), but stand-ins stay as they are (lifting one would allocate the whole weight)."""

    def __init__(self, module):
        self.tensors = [t for t in (*module.parameters(), *module.buffers())
                        if t.is_floating_point() and not is_stand_in(t)]
        self.dtypes = [t.dtype for t in self.tensors]

    def __enter__(self):
        import torch

        for t in self.tensors:
            t.data = t.data.float() if t.dtype != torch.float32 else t.data

    def __exit__(self, *exc):
        for t, dtype in zip(self.tensors, self.dtypes):
            if t.dtype != dtype:
                t.data = t.data.to(dtype)


def stand_in(shape, dtype):
    """A parameter of the given shape and dtype that takes no memory: one zero, broadcast (writing it fails)."""
    import torch

    p = torch.nn.Parameter(torch.zeros((), dtype=dtype).expand(shape), requires_grad=False)
    p.lorapack_stand_in = True
    return p


def is_stand_in(t) -> bool:
    return getattr(t, "lorapack_stand_in", False)


def full_model(base: Path):
    # stored precision (bf16 halves the memory); each layer is lifted to float32 when it is evaluated
    # never checkpoint code, never a pickle (transformers would otherwise ask on stdin, or read a .bin)
    return auto_class(base).from_pretrained(base, dtype="auto", trust_remote_code=False, use_safetensors=True)


def empty_model(base: Path):
    """The model's modules with a stand-in for every parameter (no memory, nothing read), in the dtype a full
    load would give it; buffers such as Gemma's embedding scale are real, computed from the config. (Not the
    meta device: PEFT places the adapters' weights on their base layer's device.)"""
    import torch
    from peft.utils.integrations import init_empty_weights
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base, trust_remote_code=False)
    dtype = getattr(config, "dtype", None)
    with init_empty_weights(include_buffers=False):
        model = auto_class(base, config).from_config(
            config, trust_remote_code=False, dtype=dtype if isinstance(dtype, torch.dtype) else torch.float32)
    for module in model.modules():
        for name, p in module._parameters.items():
            if p is not None and p.is_meta:
                module._parameters[name] = stand_in(p.shape, p.dtype)
    return model


def make_real(model, adapter: Path) -> None:
    """Zeros in place of the stand-ins an adapter's file overwrites (weights saved beside the LoRA tensors:
    modules_to_save, save_embedding_layers): PEFT copies them into the model, which a stand-in refuses."""
    import torch

    modules = dict(model.named_modules())
    for key in read_header(adapter / "adapter_model.safetensors"):
        module, kind = split_key(key)
        owner = modules.get(module.removesuffix(".base_layer"))
        p = owner._parameters.get(kind) if owner is not None and not kind.startswith("lora_") else None
        if p is not None and is_stand_in(p):
            owner._parameters[kind] = torch.nn.Parameter(torch.zeros(p.shape, dtype=p.dtype), requires_grad=False)


def auto_class(base: Path, config=None):
    """AutoModelForCausalLM, or for multimodal classes it does not list (Mistral3ForConditionalGeneration)
    AutoModelForImageTextToText; a text-only prompt runs through either."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    config = config if config is not None else AutoConfig.from_pretrained(base, trust_remote_code=False)
    if type(config) in AutoModelForCausalLM._model_mapping or getattr(config, "vision_config", None) is None:
        return AutoModelForCausalLM
    return AutoModelForImageTextToText


def safe_adapter(name: str, path: Path, tmp: Path) -> Path:
    """What PEFT loads instead of the user's folder: the adapter's safetensors (linked, read by PEFT) and its
    config with every regular expression resolved to exact module names. So PEFT can neither pick a pickle nor
    meet a pattern that backtracks for ever in Python's `re`; what it computes is unchanged."""
    st = path / "adapter_model.safetensors"
    if not (path / "adapter_config.json").is_file():
        raise AdapterError(f"reference adapter {path} has no adapter_config.json")
    if not st.is_file():
        raise AdapterError(f"reference adapter {path} has no adapter_model.safetensors"
                           + ("; lorapack never unpickles adapter_model.bin" if (path / "adapter_model.bin").exists()
                              else ""))
    config = read_json(path / "adapter_config.json", AdapterError)
    if problems := check_adapter_config(config):
        raise AdapterError(*(f"adapter {name}: {p}" for p in problems))
    parts = [split_key(k) for k in read_header(st)]
    if None in parts:
        raise AdapterError(f"adapter {name}: {st.name} holds tensors that are not PEFT LoRA weights")
    lora = sorted({m for m, kind in parts if kind.startswith("lora_")})
    saved = saved_modules(config, sorted({m for m, kind in parts if kind in ("weight", "modules_to_save")}))
    dest = tmp / name
    dest.mkdir()
    os.symlink(st.resolve(), dest / st.name)
    (dest / "adapter_config.json").write_text(json.dumps(resolved_config(config, lora, saved)))
    (dest / "lorapack-source.json").write_text(json.dumps({"config": config, "lora": lora, "saved": saved}))
    return dest


def align_names(dest: Path, model) -> None:
    """An adapter saved against the other naming of the same model — language_model.model.layers.N (the
    checkpoint's, transformers 4) where the loaded model says model.language_model.layers.N — gets its modules
    renamed to the loaded model's, in its config and its tensors; PEFT would otherwise refuse it."""
    modules = {n for n, _ in model.named_modules()}
    by_text_name = {canonical(n): n for n in modules}
    src = json.loads((dest / "lorapack-source.json").read_text())
    rename = {m: by_text_name[canonical(m)] for m in src["lora"] + src["saved"]
              if m not in modules and canonical(m) in by_text_name}
    if not rename:
        return
    from safetensors.torch import load_file, save_file

    st = dest / "adapter_model.safetensors"
    tensors = load_file(st)  # the file passed lorapack's own reader in safe_adapter

    def renamed(key: str) -> str:
        module, _ = split_key(key)
        return key.replace(module, rename[module], 1) if module in rename else key

    st.unlink()  # the link to the user's file: write a renamed copy in its place
    save_file({renamed(k): v for k, v in tensors.items()}, st)
    (dest / "adapter_config.json").write_text(
        json.dumps(resolved_config(src["config"], src["lora"], src["saved"], rename)))
