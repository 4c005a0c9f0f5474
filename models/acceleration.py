"""The networks as the training steps call them: under torch.compile, under autocast, or both.

The loop keeps the plain networks for everything that outlives a step (checkpoints, the EMA,
validation, the referee, the export) and calls these views in the critic and generator steps.
A view shares the plain network's parameters, so an optimiser step through one is a step of
the other. The gradient penalty calls the critic outside torch.compile
(models.objectives.base.uncompiled): it differentiates the critic twice, which AOTAutograd
refuses ("does not currently support double backward").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from models.spec import Precision


class Autocast(nn.Module):
    """`module` under torch.autocast in `dtype`; its output cast back to float32, so that every
    loss is computed in float32."""

    def __init__(self, module: nn.Module, device_type: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module
        self.device_type = device_type
        self.dtype = dtype

    def forward(self, x: Tensor, a: Tensor | None = None) -> Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.module(x, a)
        return out.float()


class CompileFailed(RuntimeError):
    """torch.compile could not build the training steps (no C++ compiler, an unsupported op)."""


def step_view(module: nn.Module, *, compile: bool, precision: Precision,
              device: torch.device) -> nn.Module:
    """`module` as the training steps call it."""
    view = module
    if precision == "bfloat16":
        view = Autocast(view, device.type, torch.bfloat16)
    if compile:
        view = torch.compile(view)  # type: ignore[assignment]
    return view


def is_compile_error(exc: BaseException) -> bool:
    """Whether `exc` came out of torch.compile (dynamo's tracing or inductor's code generation)
    rather than out of the step it compiled."""
    from torch._dynamo.exc import TorchDynamoException

    return isinstance(exc, TorchDynamoException) or type(exc).__module__.startswith(
        ("torch._inductor", "torch._dynamo"))


@contextmanager
def explained_compile_errors(compiling: bool) -> Iterator[None]:
    """Turn an error of torch.compile into one that names training.compile and the way out."""
    try:
        yield
    except Exception as exc:
        if not (compiling and is_compile_error(exc)):
            raise
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        raise CompileFailed(
            f"training.compile: torch.compile could not compile the training steps "
            f"({type(exc).__name__}: {first_line}); train without training.compile, or give the "
            "worker a C++ compiler (inductor needs one on the CPU)") from exc


__all__ = ["Autocast", "CompileFailed", "explained_compile_errors", "is_compile_error", "step_view"]
