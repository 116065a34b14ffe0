"""LyCORIS networks (LoHa, LoKr, DoRA) on the layers a model family targets, via the LyCORIS
library (``lycoris-lora``, the one Kohya users train with).

Kiln builds one LyCORIS module per Kohya target itself (instead of the library's own network
walk) so the names are exactly Kohya's for each family, SDXL's SGM numbering included, and the
file holds what A1111, ComfyUI and the library's Kohya loader read: ``hada_w1_a``..``hada_w2_b``
(LoHa), ``lokr_w1``/``lokr_w2`` or their ``_a``/``_b`` factors (LoKr), ``lora_down``/``lora_up``
with ``dora_scale`` (DoRA), each with its ``alpha``. The modules hook their layer's forward and
live under the model (``kiln_lycoris``) so accelerate and the optimizer see their parameters.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from kiln.engine.errors import ConfigError
from kiln.engine.models.lora_keys import LoraTarget
from kiln.engine.models.lycoris_log import LOGGER_NAME, quiet_lycoris_log
from torch import nn

ATTRIBUTE = "kiln_lycoris"
# network.type -> (LyCORIS module class, its extra arguments)
ALGORITHMS: dict[str, tuple[str, dict[str, Any]]] = {
    "loha": ("LohaModule", {}),
    "lokr": ("LokrModule", {}),
    "dora": ("LoConModule", {"weight_decompose": True}),
}
LYCORIS_TYPES = tuple(ALGORITHMS)


def require_lycoris(kind: str) -> Any:
    """The LyCORIS modules package, or a one-line refusal naming the fix.

    The library logs to stdout with its own handler; that would land in ``--json`` output and
    before a run folder's last line, so its logger is silenced here and forwarded to the run's
    log while modules are made (:func:`add_lycoris`).
    """
    try:
        import lycoris.modules as modules
    except ImportError:
        raise ConfigError(
            f'network.type = "{kind}" needs the LyCORIS library: pip install "lora-kiln[lycoris]" '
            '(or lycoris-lora), or use "lora"'
        ) from None
    quiet_lycoris_log()
    return modules


class _ToRunLog(logging.Handler):
    """Passes the library's messages to the run's log (``train.log``)."""

    def __init__(self, log: logging.Logger) -> None:
        super().__init__()
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        self.log.log(record.levelno, "LyCORIS: %s", record.getMessage())


def add_lycoris(
    model: nn.Module,
    targets: list[LoraTarget],
    kind: str,
    factor: int = -1,
    log: logging.Logger | None = None,
) -> list[nn.Parameter]:
    """Put a LyCORIS module of ``kind`` on every target and return their parameters (float32).

    Everything else in ``model`` is frozen. Each module starts as the library initialises it
    (the network adds nothing before training). The library's notes (a LoKr factor falling
    back to a full matrix on a small layer...) go to ``log``.
    """
    modules = require_lycoris(kind)
    class_name, extra = ALGORITHMS[kind]
    cls = getattr(modules, class_name)
    model.requires_grad_(False)
    if not targets:
        return []
    holder = nn.ModuleDict()
    library_log = logging.getLogger(LOGGER_NAME)
    forward: logging.Handler = _ToRunLog(log) if log is not None else logging.NullHandler()
    library_log.addHandler(forward)
    try:
        for target in targets:
            layer = model.get_submodule(target.module)
            options = {**extra, **({"factor": factor} if kind == "lokr" else {})}
            module = cls(target.kohya, layer, 1.0, target.rank, target.alpha, **options)
            module.to(layer.weight.device)
            module.apply_to()
            holder[target.kohya] = module
    finally:
        library_log.removeHandler(forward)
    model.add_module(ATTRIBUTE, holder)
    params = []
    for param in holder.parameters():
        param.data = param.data.float()
        param.requires_grad_(True)
        params.append(param)
    return params


def lycoris_modules(model: nn.Module) -> nn.ModuleDict:
    """The LyCORIS modules :func:`add_lycoris` put on ``model`` (empty when none)."""
    found = getattr(model, ATTRIBUTE, None)
    return found if isinstance(found, nn.ModuleDict) else nn.ModuleDict()


def lycoris_state_dict(model: nn.Module, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """Every module's tensors under Kohya names (``<name>.hada_w1_a``...), cast to ``dtype`` on
    the CPU; ``alpha`` as a scalar, as Kohya and LyCORIS write it."""
    state: dict[str, torch.Tensor] = {}
    for name, module in lycoris_modules(model).items():
        for key, value in module.state_dict().items():
            tensor = value.detach().to("cpu")
            state[f"{name}.{key}"] = (tensor.to(dtype) if key != "alpha" else tensor.float()).contiguous()
    return state


def lycoris_copy(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """A copy of every module's tensors (the resume state)."""
    return {
        name: {key: value.detach().clone() for key, value in module.state_dict().items()}
        for name, module in lycoris_modules(model).items()
    }


def load_lycoris_copy(model: nn.Module, saved: dict[str, dict[str, torch.Tensor]]) -> None:
    """Restore what :func:`lycoris_copy` returned."""
    for name, module in lycoris_modules(model).items():
        module.load_state_dict(saved[name])


def network_args(kind: str, conv_rank: int, conv_alpha: float, factor: int) -> dict[str, str]:
    """``ss_network_args`` as LyCORIS's Kohya network records them (strings)."""
    args = {"algo": "locon" if kind == "dora" else kind}
    if conv_rank:
        args.update(conv_dim=str(conv_rank), conv_alpha=str(conv_alpha))
    if kind == "lokr":
        args["factor"] = str(factor)
    if kind == "dora":
        args["dora_wd"] = "True"
    return args
