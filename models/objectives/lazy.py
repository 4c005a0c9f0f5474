"""torch, imported when a loss is first computed.

The objectives' files hold their parameters too, and the API imports those to validate job
specs: it must not load PyTorch. So the files reach torch through these stand-ins, which
import it on first use (in the worker, at the first training step)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _Lazy:
    def __init__(self, module: str) -> None:
        self._module = module
        self._loaded: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._loaded is None:
            self._loaded = importlib.import_module(self._module)
        return getattr(self._loaded, attr)


torch: Any = _Lazy("torch")
F: Any = _Lazy("torch.nn.functional")
