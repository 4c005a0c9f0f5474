"""The trained generator as one self-contained ONNX file, checked against PyTorch.

The graph: z [N, latent_dim] (and, only for conditional generators, conditions [N, C] in
physical units) -> condition_transform.forward_module -> G -> feature_transform.inverse_module
-> samples [N, F] in physical units. N is a dynamic axis.

The `conditions` input has one column per condition (`condition_transform.n_features` when
the transform says so); a categorical condition takes its code 0..K-1 there and is one-hot
encoded inside the graph, so G may see more condition columns (`G.n_conditions`) than the
graph's input has.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

TOLERANCE = 1e-4  # max abs error, onnxruntime vs PyTorch, on the model's (standardised) scale
N_CHECK = 64  # rows in the parity check
DEFAULT_OPSET = 17


class ExportError(RuntimeError):
    """The export failed, the file is not valid ONNX, or onnxruntime disagrees with PyTorch."""


class ModuleTransform(Protocol):
    """What export needs of a models.preprocessing.Transform. `forward(np) -> np` is also used
    when present (to measure the parity error on the model's scale), as is `inverse(np) -> np`
    (to draw realistic physical conditions)."""

    def forward_module(self) -> nn.Module: ...

    def inverse_module(self) -> nn.Module: ...


@dataclass
class ExportReport:
    path: Path
    sha256: str
    max_abs_error: float
    opset: int
    input_names: list[str]
    output_names: list[str]


class SamplingGraph(nn.Module):
    """z [N, latent_dim], conditions [N, C] (physical) -> samples [N, F] (physical)."""

    def __init__(self, generator: nn.Module, feature_inverse: nn.Module,
                 condition_forward: nn.Module | None) -> None:
        super().__init__()
        self.generator, self.feature_inverse = generator, feature_inverse
        self.condition_forward = condition_forward

    def forward(self, z: Tensor, conditions: Tensor | None = None) -> Tensor:
        a = None if self.condition_forward is None else self.condition_forward(conditions).float()
        return self.feature_inverse(self.generator(z, a)).float()


def max_abs_error(expected: np.ndarray, actual: np.ndarray) -> float:
    """max |expected - actual|; inf for a shape mismatch or a NaN/inf in only one of them."""
    expected, actual = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    if expected.shape != actual.shape:
        return float("inf")
    same = (expected == actual) | (np.isnan(expected) & np.isnan(actual))
    diff = np.where(same, 0.0, np.abs(expected - actual))
    diff = np.where(np.isnan(diff), np.inf, diff)
    return float(diff.max()) if diff.size else 0.0


def check_parity(expected: np.ndarray, actual: np.ndarray, tol: float = TOLERANCE) -> float:
    """The max abs error between the two arrays, or ExportError when it exceeds tol."""
    err = max_abs_error(expected, actual)
    if not err <= tol:
        raise ExportError(
            f"onnxruntime disagrees with PyTorch: max abs error {err:.3g} > {tol:g} "
            f"(shapes {np.shape(expected)} vs {np.shape(actual)})"
        )
    return err


def _check_inputs(
    latent_dim: int, n_conditions: int, condition_transform: ModuleTransform | None, n: int,
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {"z": rng.standard_normal((n, latent_dim)).astype(np.float32)}
    if n_conditions:
        a = rng.standard_normal((n, n_conditions))
        inverse = getattr(condition_transform, "inverse", None)
        if callable(inverse):  # physical conditions that map to a standard normal
            # (for a one-hot block the argmax: a random category's code)
            a = inverse(a.astype(np.float32))
        else:
            width = getattr(condition_transform, "n_features", n_conditions)
            a = a[:, :width] if width <= n_conditions else rng.standard_normal((n, width))
        feeds["conditions"] = np.asarray(a, np.float32)
    return feeds


def _model_scale(feature_transform: ModuleTransform, samples: np.ndarray) -> np.ndarray:
    forward = getattr(feature_transform, "forward", None)
    return np.asarray(forward(samples), np.float64) if callable(forward) else samples


def export_onnx(
    generator: nn.Module,
    path: Path,
    *,
    feature_transform: ModuleTransform,
    condition_transform: ModuleTransform | None,
    metadata: dict[str, str],
    opset: int = DEFAULT_OPSET,
) -> ExportReport:
    """Write `generator` with its transforms to `path` as one ONNX file; raise ExportError
    unless it passes onnx.checker and onnxruntime matches PyTorch.

    Parity: both pipelines run on the same N_CHECK rows (z ~ N(0, 1); conditions are standard
    normal values pushed through condition_transform.inverse when it has one). Both physical
    outputs are mapped back to the model's scale with feature_transform.forward (numpy) when
    it has one, where the tolerance 1e-4 means the same on every feature whatever its units;
    otherwise they are compared in physical units. The generator is exported in eval mode and
    its modes are restored afterwards. The file appears at `path` only once every check has
    passed. `metadata` goes into the model's metadata_props (string values).
    """
    path = Path(path)
    bad = {k: type(v).__name__ for k, v in metadata.items() if not isinstance(v, str)}
    if bad:
        raise ExportError(f"metadata values must be strings (JSON for lists): {bad}")
    n_conditions = int(getattr(generator, "n_conditions", 0))
    # A plain int attribute, which nn.Module's __getattr__ types as Tensor | Module.
    latent_dim = int(cast(int, generator.latent_dim))
    if n_conditions and condition_transform is None:
        raise ExportError("the generator is conditional but condition_transform is None")
    input_names = ["z", "conditions"] if n_conditions else ["z"]
    output_names = ["samples"]

    modes = {m: m.training for m in generator.modules()}
    generator.eval()
    try:
        graph = SamplingGraph(
            generator,
            feature_transform.inverse_module(),
            # Not None when n_conditions: refused above.
            condition_transform.forward_module()
            if n_conditions and condition_transform is not None else None,
        ).eval()
        feeds = _check_inputs(latent_dim, n_conditions, condition_transform, N_CHECK)
        args = tuple(torch.from_numpy(feeds[k]) for k in input_names)
        with torch.no_grad():
            expected = graph(*args).numpy()

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(suffix=".onnx.tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            _write(graph, args, tmp, input_names, output_names, opset, metadata)
            try:
                onnx.checker.check_model(str(tmp), full_check=True)
            except Exception as e:  # onnx.checker.ValidationError, shape inference errors
                raise ExportError(f"onnx.checker rejected the exported model: {e}") from e
            session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            (actual,) = session.run(output_names, feeds)
            err = check_parity(
                _model_scale(feature_transform, expected), _model_scale(feature_transform, actual)
            )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        for m, training in modes.items():
            m.training = training

    return ExportReport(
        path=path,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        max_abs_error=err,
        opset=opset,
        input_names=input_names,
        output_names=output_names,
    )


def _write(
    graph: nn.Module, args: tuple[Tensor, ...], path: Path, input_names: list[str],
    output_names: list[str], opset: int, metadata: dict[str, str],
) -> None:
    try:
        with warnings.catch_warnings():
            # dynamo=False: the TorchScript exporter, deprecated but fast and enough for these
            # feed-forward graphs.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(
                graph, args, str(path), dynamo=False, opset_version=opset,
                input_names=input_names, output_names=output_names,
                dynamic_axes={name: {0: "N"} for name in input_names + output_names},
                do_constant_folding=True,
            )
    except Exception as e:
        raise ExportError(f"torch.onnx.export failed: {e}") from e
    model = onnx.load(str(path))
    props = {p.key: p for p in model.metadata_props}
    for key, value in metadata.items():
        entry = props[key] if key in props else model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))  # weights inline: one self-contained file
