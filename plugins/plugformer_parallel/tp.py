"""Tensor parallel (Megatron-style) with DTensor ``parallelize_module`` over a 1-D mesh of all ranks.

Per block: attention ``qkv`` column-parallel (each rank computes its own heads), ``proj_out``
row-parallel (output all-reduced); MLP ``proj_in`` column-parallel, ``proj_out`` row-parallel. Norms,
embeddings, the position encoding and the LM head stay replicated: every rank sees the same batch
(``dp_size`` is 1), so replicated parameters get identical gradients on every rank.

The fused ``qkv`` weight's rows are ``[q (H·D) | k (Hkv·D) | v (Hkv·D)]``: a contiguous column-wise
shard of that would give rank 0 only q rows. The transform therefore permutes the rows once, before
sharding, to ``[q_0 k_0 v_0 | q_1 k_1 v_1 | …]`` (rank r's q heads and its matching kv heads), so the
contiguous shard of rank r is exactly its head group. The permutation is undone in checkpoints:
``dcp/`` and ``model.safetensors`` hold ``qkv`` (and its optimizer state) in the usual layout, as
plain full tensors, so a ``tp`` checkpoint loads under any strategy and any checkpoint loads under
``tp``. Every other sharded tensor is stored as DTensor shards (resharded by DCP on load).

Launched by torchrun (``torchrun --nproc_per_node=2 -m plugformer train parallel=tp``).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Placement, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import (ColwiseParallel, RowwiseParallel, SequenceParallel,
                                               parallelize_module)

from plugformer.checkpoint import OPTIMIZER_STATE, load_model, load_state, save_model, unflatten_state, write_json
from plugformer import ConfigError
from plugformer.interfaces import ModelTransform, Stage
from plugformer.model import SelfAttention
from plugformer_parallel.group import ProcessGroupStrategy
from plugformer_parallel.layout import DCP_DIR, LAYOUT_FILE, is_sharded
from plugformer_parallel.schemas import TPConfig
from plugformer_parallel.sharded import (_dcp_load, _drop_aliases, _restore_aliases, full_model_state,
                                         matching_optimizer_tensors, split_tensors, tied_names)


def check_tp_dims(n_heads: int, n_kv_heads: int, tp: int) -> None:
    """Refuse head counts that cannot be split evenly over ``tp`` ranks (one line, naming the numbers)."""
    if n_heads % tp:
        raise ConfigError(f"parallel=tp: model.n_heads={n_heads} is not divisible by the tensor-parallel size "
                          f"{tp} (world size); use n_heads a multiple of {tp} or another number of processes")
    if n_kv_heads < tp or n_kv_heads % tp:
        raise ConfigError(f"parallel=tp: model.n_kv_heads={n_kv_heads} cannot be split over tensor-parallel size {tp} "
                          f"(needs n_kv_heads >= {tp} and divisible by it; kv heads are not replicated)")


def qkv_permutation(n_heads: int, n_kv_heads: int, head_dim: int, tp: int) -> Tensor:
    """Row indices ``idx`` such that ``canonical[idx]`` is the per-rank-grouped layout
    ``[q_0 k_0 v_0 | q_1 k_1 v_1 | …]``; ``argsort(idx)`` undoes it."""
    q_rows, kv_rows = n_heads * head_dim // tp, n_kv_heads * head_dim // tp
    q0, k0, v0 = 0, n_heads * head_dim, (n_heads + n_kv_heads) * head_dim
    parts = []
    for r in range(tp):
        parts += [torch.arange(q0 + r * q_rows, q0 + (r + 1) * q_rows),
                  torch.arange(k0 + r * kv_rows, k0 + (r + 1) * kv_rows),
                  torch.arange(v0 + r * kv_rows, v0 + (r + 1) * kv_rows)]
    return torch.cat(parts)


class TPSelfAttention(SelfAttention):
    """:class:`SelfAttention` on this rank's heads: ``dims`` hold the local head counts, and a per-head
    attention bias (ALiBi) is sliced to the rank's heads."""

    tp_rank: int = 0
    full_heads: int = 0

    def head_bias(self, bias: Tensor | None) -> Tensor | None:
        H = self.dims.n_heads
        if bias is not None and bias.dim() == 4 and bias.shape[1] == self.full_heads and self.full_heads != H:
            return bias[:, self.tp_rank * H:(self.tp_rank + 1) * H]
        return bias


def block_plan(sequence_parallel: bool) -> dict[str, Any]:
    """``parallelize_module`` plan of one block: Megatron's column-parallel in, row-parallel out.

    With ``sequence_parallel`` the residual stream between blocks is split on the sequence dimension:
    norms run on their sequence shard (``SequenceParallel``), the row-parallel outputs reduce-scatter
    to sequence shards (instead of all-reducing), and attention and the MLP gather the full sequence
    at their input (see :func:`_gather_sequence`).
    """
    if not sequence_parallel:
        return {"attn.qkv": ColwiseParallel(), "attn.proj_out": RowwiseParallel(),
                "mlp.proj_in": ColwiseParallel(), "mlp.proj_out": RowwiseParallel()}
    seq = Shard(1)
    return {"norm_attn": SequenceParallel(use_local_output=True), "attn.qkv": ColwiseParallel(),
            "attn.proj_out": RowwiseParallel(output_layouts=seq),
            "norm_mlp": SequenceParallel(use_local_output=True), "mlp.proj_in": ColwiseParallel(),
            "mlp.proj_out": RowwiseParallel(output_layouts=seq)}


def _relayout_first_input(mesh: DeviceMesh, source: Placement, target: Placement):
    """A forward pre-hook: the module's first argument (a local tensor laid out as ``source`` over
    ``mesh``) becomes the local tensor of layout ``target``. Its backward is DTensor's (e.g. a
    sequence gather's gradient is reduced and split back to sequence shards)."""

    def hook(module: nn.Module, args: tuple) -> tuple:
        x = DTensor.from_local(args[0], mesh, [source], run_check=False).redistribute(mesh, [target])
        return (x.to_local(), *args[1:])

    return hook


def _gather_sequence(mesh: DeviceMesh):
    return _relayout_first_input(mesh, Shard(1), Replicate())


def _scatter_sequence(mesh: DeviceMesh):
    scatter = _relayout_first_input(mesh, Replicate(), Shard(1))

    def hook(module: nn.Module, args: tuple) -> tuple:
        if args[0].shape[1] % mesh.size():
            raise ConfigError(f"parallel.sequence_parallel=true: a sequence of {args[0].shape[1]} tokens does not "
                              f"split over the tensor-parallel size {mesh.size()}; use a data.seq_len multiple of "
                              f"{mesh.size()} or sequence_parallel=false")
        return scatter(module, args)

    return hook


def check_tp_model(model: nn.Module, tp: int, vocab_parallel: bool) -> None:
    """Refuse a model (or option) that cannot be split over ``tp`` ranks, naming the component."""
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ConfigError("parallel=tp needs a plugformer Transformer (a model with .blocks)")
    for i, block in enumerate(blocks):
        attn, mlp = block.attn, block.mlp
        if type(attn) is not SelfAttention:
            raise ConfigError(f"parallel=tp: block {i} attention is {type(attn).__name__}, not SelfAttention")
        for name in ("proj_in", "proj_out"):
            if not isinstance(getattr(mlp, name, None), nn.Linear):
                raise ConfigError(f"parallel=tp: mlp {type(mlp).__name__} (block {i}) has no Linear "
                                  f"'{name}'; tensor parallel supports gelu, relu and swiglu MLPs")
        check_tp_dims(attn.dims.n_heads, attn.dims.n_kv_heads, tp)
    # (a vocabulary not divisible by tp is split unevenly: DTensor handles uneven shards)
    if vocab_parallel and not (isinstance(getattr(model, "lm_head", None), nn.Linear)
                               and isinstance(getattr(model, "tok_emb", None), nn.Embedding)):
        raise ConfigError("parallel.vocab_parallel=true needs a model with an nn.Embedding tok_emb and an "
                          "nn.Linear lm_head")


class _TensorParallel(ModelTransform):
    """Shard every block over the strategy's tensor-parallel mesh; optionally the sequence (norms,
    dropout) and the vocabulary (embedding, head); the rest becomes replicated DTensors."""

    stage = Stage.SHARD

    def __init__(self, strategy: TensorParallelStrategy):
        super().__init__(strategy.config)
        self.strategy = strategy

    def apply(self, model: nn.Module) -> nn.Module:
        c = self.config
        sp, vp = bool(getattr(c, "sequence_parallel", False)), bool(getattr(c, "vocab_parallel", False))
        mesh = self.strategy.tp_mesh
        tp, rank = mesh.size(), mesh.get_local_rank()
        check_tp_model(model, tp, vp)
        tied = tied_names(model)
        for block in model.blocks:
            attn = block.attn
            dims = attn.dims
            idx = qkv_permutation(dims.n_heads, dims.n_kv_heads, dims.head_dim, tp)
            with torch.no_grad():
                attn.qkv.weight.data = attn.qkv.weight.data[idx.to(attn.qkv.weight.device)].contiguous()
                if attn.qkv.bias is not None:
                    attn.qkv.bias.data = attn.qkv.bias.data[idx.to(attn.qkv.bias.device)].contiguous()
            parallelize_module(block, mesh, block_plan(sp))
            if sp:
                attn.register_forward_pre_hook(_gather_sequence(mesh))
                block.mlp.register_forward_pre_hook(_gather_sequence(mesh))
            attn.dims = replace(dims, n_heads=dims.n_heads // tp, n_kv_heads=dims.n_kv_heads // tp,
                                d_model=dims.head_dim * dims.n_heads // tp)
            attn.__class__ = TPSelfAttention
            attn.tp_rank, attn.full_heads = rank, dims.n_heads
            attn.qkv_index = idx  # a plain attribute (not a buffer): not in the state dict
        if vp:  # embedding rows and head rows split by vocabulary; logits gathered for the objective
            parallelize_module(model, mesh, {
                "tok_emb": RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate()),
                "lm_head": ColwiseParallel(input_layouts=Shard(1) if sp else Replicate(),
                                           output_layouts=Replicate())})
            if tied.get("lm_head.weight") == "tok_emb.weight":
                model.lm_head.weight = model.tok_emb.weight  # both Shard(0) over the vocabulary: one tensor
        elif sp:
            model.lm_head.register_forward_pre_hook(_gather_sequence(mesh))
        if sp:
            parallelize_module(model, mesh, {"norm_f": SequenceParallel(use_local_output=True)})
            model.drop.register_forward_pre_hook(_scatter_sequence(mesh))
        replicate_the_rest(model, mesh)
        return model


def _to_dtensor(value: Any, mesh: DeviceMesh) -> Any:
    if isinstance(value, Tensor) and not isinstance(value, DTensor):
        return DTensor.from_local(value, mesh, [Replicate()], run_check=False)
    return value


def _to_local(value: Any) -> Any:
    if isinstance(value, DTensor):
        return value.to_local()
    if isinstance(value, tuple):
        return tuple(_to_local(v) for v in value)
    return value


def _replicated_call(fn, mesh: DeviceMesh):
    def call(*args, **kwargs):
        out = fn(*(_to_dtensor(a, mesh) for a in args), **{k: _to_dtensor(v, mesh) for k, v in kwargs.items()})
        return _to_local(out)

    return call


def replicate_the_rest(model: nn.Module, mesh: DeviceMesh) -> None:
    """Turn every parameter not sharded yet (norms, embeddings, head, biases) into a replicated DTensor.

    Gradient clipping and foreach optimizers need all parameters of one kind (DTensor or not). Each module
    owning such parameters gets its tensor inputs wrapped as replicated DTensors and its outputs unwrapped,
    so the rest of the model keeps seeing plain tensors. Tied parameters stay tied (converted once).
    """
    converted: dict[int, nn.Parameter] = {}
    position = getattr(model, "position", None)
    if position is not None and any(not isinstance(p, DTensor) for p in position.parameters()):
        # a position encoding reads its parameters in embed/rotate/attention_bias, not in forward
        for method in ("embed", "rotate", "attention_bias"):
            if hasattr(position, method):
                setattr(position, method, _replicated_call(getattr(position, method), mesh))
    for module in model.modules():
        plain = [n for n, p in module._parameters.items() if p is not None and not isinstance(p, DTensor)]
        if not plain:
            continue
        for name in plain:
            p = module._parameters[name]
            if id(p) not in converted:
                converted[id(p)] = nn.Parameter(DTensor.from_local(p.data, mesh, [Replicate()], run_check=False),
                                                requires_grad=p.requires_grad)
            module._parameters[name] = converted[id(p)]

        def pre(mod, args, kwargs):
            return tuple(_to_dtensor(a, mesh) for a in args), {k: _to_dtensor(v, mesh) for k, v in kwargs.items()}

        def post(mod, args, output):
            return _to_local(output)

        module.register_forward_pre_hook(pre, with_kwargs=True)
        module.register_forward_hook(post)


def _qkv_params(model: nn.Module) -> dict[str, Tensor]:
    """``{fqn: permutation}`` for every permuted ``qkv`` weight and bias."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, TPSelfAttention):
            for p in ("weight", "bias"):
                if getattr(module.qkv, p, None) is not None:
                    out[f"{name}.qkv.{p}"] = module.qkv_index
    return out


def _canonical(value: Tensor, idx: Tensor) -> Tensor:
    """The full tensor of a permuted qkv DTensor, rows back in ``[q | k | v]`` order (collective)."""
    full = value.full_tensor() if isinstance(value, DTensor) else value
    return full[torch.argsort(idx).to(full.device)].cpu().contiguous()


def _optim_key(path: str) -> tuple[str, str] | None:
    """``state/<fqn>/<name>`` → (fqn, name) for optimizer state entries."""
    if not path.startswith("state/"):
        return None
    fqn, _, name = path[len("state/"):].rpartition("/")
    return fqn, name


class TensorParallelStrategy(ProcessGroupStrategy):
    """Tensor parallel over all ranks of the default process group (one model replica: dp_size 1)."""

    config: TPConfig

    def setup(self, device: str) -> torch.device:
        dev = super().setup(device)
        self.mesh: DeviceMesh = init_device_mesh(dev.type, (self.world_size,), mesh_dim_names=("tp",))
        return dev

    @property
    def tp_mesh(self) -> DeviceMesh:
        """The mesh (dimension) layers are split over: every rank here; the ``tp`` dimension under 2-D."""
        return self.mesh

    def transforms(self) -> list[ModelTransform]:
        return [_TensorParallel(self)]

    @property
    def dp_rank(self) -> int:
        return 0

    @property
    def dp_size(self) -> int:
        return 1

    def reduce_mean(self, value: Tensor) -> Tensor:
        return value.detach().clone()  # one replica: every rank already holds the same value

    # -- checkpoints -------------------------------------------------------------------------------
    def _states(self, model: nn.Module, optimizer: torch.optim.Optimizer | None):
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

        if optimizer is None:
            return get_model_state_dict(model), None
        return get_state_dict(model, optimizer)

    def save(self, directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """DCP shards from every rank (qkv and its optimizer state gathered, in canonical layout) plus a
        consolidated ``model.safetensors`` from rank 0."""
        directory = Path(directory)
        perms = _qkv_params(model)
        model_state, optim_state = self._states(model, optimizer)
        _drop_aliases(model, model_state)
        skeleton, optim_tensors = split_tensors(optim_state, "")
        for fqn, idx in perms.items():
            model_state[fqn] = _canonical(model_state[fqn], idx)
        for key in sorted(optim_tensors):
            parsed = _optim_key(key)
            if parsed and parsed[0] in perms and optim_tensors[key].dim() > 0:
                optim_tensors[key] = _canonical(optim_tensors[key], perms[parsed[0]])
        self.write_shards(directory / DCP_DIR, {"model": model_state, "optim": optim_tensors})
        full = full_model_state(model)
        if self.is_main:
            for fqn, idx in perms.items():
                if fqn in full:
                    full[fqn] = full[fqn][torch.argsort(idx)].contiguous()
            write_json(directory / DCP_DIR / LAYOUT_FILE, skeleton)
            save_model(directory, full)

    def _to_local(self, canonical: Tensor, like: Tensor, idx: Tensor) -> Tensor:
        permuted = canonical[idx.to(canonical.device)].to(like.device, like.dtype)
        if isinstance(like, DTensor):
            return distribute_tensor(permuted, like.device_mesh, like.placements)
        return permuted

    def load(self, directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        """A sharded checkpoint (``tp`` or ``fsdp``, any world size) or a plain one (``single``/``ddp``)."""
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

        directory = Path(directory)
        perms = _qkv_params(model)
        model_state, optim_state = self._states(model, optimizer)
        if not is_sharded(directory):
            self._load_plain(directory, model, optimizer, model_state, optim_state, perms)
            return
        aliases = _drop_aliases(model, model_state)
        live_model = dict(model_state)
        for fqn in perms:  # read qkv as the full canonical tensor, then permute and shard it
            model_state[fqn] = torch.empty(model_state[fqn].shape, dtype=model_state[fqn].dtype)
        state: dict[str, Any] = {"model": model_state}
        skeleton = None
        live_optim: dict[str, Tensor] = {}
        if optimizer is not None:
            skeleton, live_optim = matching_optimizer_tensors(directory, optim_state)
            state["optim"] = dict(live_optim)
            for key, value in live_optim.items():
                parsed = _optim_key(key)
                if parsed and parsed[0] in perms and value.dim() > 0:
                    state["optim"][key] = torch.empty(value.shape, dtype=value.dtype)
        _dcp_load(directory, state)
        for fqn, idx in perms.items():
            state["model"][fqn] = self._to_local(state["model"][fqn], live_model[fqn], idx)
        _restore_aliases(state["model"], aliases)
        if optimizer is None:
            set_model_state_dict(model, state["model"])
            return
        for key, value in live_optim.items():
            parsed = _optim_key(key)
            if parsed and parsed[0] in perms and value.dim() > 0:
                state["optim"][key] = self._to_local(state["optim"][key], value, perms[parsed[0]])
        optim_loaded = unflatten_state(skeleton, state["optim"])
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=optim_loaded)

    def _load_plain(self, directory, model, optimizer, model_state, optim_state, perms) -> None:
        """A full ``model.safetensors`` (+ id-keyed ``optimizer``) from ``single``/``ddp``: every rank reads
        the files and keeps its shards."""
        from torch.distributed.checkpoint.state_dict import set_state_dict, set_model_state_dict

        full = load_model(directory)
        new_model = {}
        for fqn, live in model_state.items():
            if fqn not in full:
                raise ConfigError(f"checkpoint '{directory}' has no '{fqn}'")
            value = full[fqn]
            if fqn in perms:
                new_model[fqn] = self._to_local(value, live, perms[fqn])
            elif isinstance(live, DTensor):
                new_model[fqn] = distribute_tensor(value.to(live.device, live.dtype), live.device_mesh,
                                                   live.placements)
            else:
                new_model[fqn] = value.to(live.device, live.dtype)
        if optimizer is None:
            set_model_state_dict(model, new_model)
            return
        saved = load_state(directory, OPTIMIZER_STATE)
        if len(saved["param_groups"]) != len(optim_state["param_groups"]):
            raise ConfigError(f"checkpoint '{directory}': optimizer param groups differ from this run's")
        names: dict[int, str] = {}
        groups = []
        for old, new in zip(saved["param_groups"], optim_state["param_groups"]):
            if len(old["params"]) != len(new["params"]):
                raise ConfigError(f"checkpoint '{directory}': optimizer param groups differ from this run's")
            names.update(zip(old["params"], new["params"]))
            groups.append({**old, "params": list(new["params"])})
        state = {}
        for i, values in saved["state"].items():
            fqn = names[int(i)]
            live_values = optim_state["state"].get(fqn, {})
            out = {}
            for k, v in values.items():
                live = live_values.get(k)
                if torch.is_tensor(v) and v.dim() > 0 and live is not None:
                    out[k] = (self._to_local(v, live, perms[fqn]) if fqn in perms else
                              distribute_tensor(v.to(live.device, live.dtype), live.device_mesh, live.placements)
                              if isinstance(live, DTensor) else v.to(live.device, live.dtype))
                else:
                    out[k] = v
            state[fqn] = out
        set_state_dict(model, optimizer, model_state_dict=new_model,
                       optim_state_dict={"state": state, "param_groups": groups})
