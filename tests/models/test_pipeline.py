"""From spec to ONNX file: the pipeline the worker runs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from models.datasets import DataError
from models.pipeline import run_job, sample_trained
from models.spec import JobSpec

FAST = {"generator": {"width": 32, "depth": 2}, "critic": {"width": 32, "depth": 2}}


def spec_for(dataset: dict, steps: int = 20, **arch) -> JobSpec:
    return JobSpec.model_validate({
        "objective": "wgan-gp",
        "architecture": {"name": "mlp", "latent_dim": 8, **FAST, **arch},
        "dataset": dataset,
        "training": {"steps": steps, "batch_size": 64, "checkpoint_every": 10, "log_every": 5,
                     "device": "cpu"},
    })


def test_run_job_writes_an_onnx_generator_with_its_metadata(tmp_path):
    spec = spec_for({"uri": "builtin://8gaussians", "max_rows": 2000})
    seen = []
    result = run_job(spec, tmp_path, on_progress=seen.append)
    assert [p.step for p in seen] == [5, 10, 15, 20]
    assert result.onnx_path.exists() and (tmp_path / "checkpoint.pt").exists()
    md = {p.key: p.value for p in onnx.load(result.onnx_path).metadata_props}
    assert json.loads(md["feature_names"]) == ["x", "y"]
    assert md["spec_hash"] == spec.spec_hash() == result.metadata["spec_hash"]
    assert result.metadata["metrics"]["n_modes"] == 8
    assert result.metadata["export_max_abs_error"] <= 1e-4
    sess = ort.InferenceSession(result.onnx_path, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["z"]
    out = sess.run(["samples"], {"z": np.random.default_rng(0).normal(size=(7, 8)).astype("f4")})
    assert out[0].shape == (7, 2)


def test_a_finished_job_rerun_resumes_at_the_end(tmp_path):
    spec = spec_for({"uri": "builtin://8gaussians", "max_rows": 2000})
    run_job(spec, tmp_path)
    again = run_job(spec, tmp_path, on_progress=lambda p: pytest.fail("trained again"))
    assert again.metadata["resumed_from_step"] == spec.training.steps


def test_conditional_onnx_takes_physical_conditions(tmp_path):
    spec = spec_for({"uri": "builtin://conditional-ring", "max_rows": 4000})
    result = run_job(spec, tmp_path)
    sess = ort.InferenceSession(result.onnx_path, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["z", "conditions"]
    z = np.random.default_rng(0).normal(size=(5, 8)).astype("f4")
    a = np.full((5, 1), 1.0, "f4")
    (onnx_out,) = sess.run(["samples"], {"z": z, "conditions": a})
    assert onnx_out.shape == (5, 2) and np.isfinite(onnx_out).all()


def test_bad_data_raises_a_data_error_naming_the_column(tmp_path):
    spec = spec_for({"uri": "builtin://8gaussians", "features": ["x", "nope"]})
    with pytest.raises(DataError, match="nope"):
        run_job(spec, tmp_path)


def test_sample_trained_needs_conditions_for_a_conditional_generator(tmp_path):
    from models.datasets import load_dataset
    from models.train import train

    spec = spec_for({"uri": "builtin://conditional-ring", "max_rows": 1000}, steps=2)
    trained = train(spec, load_dataset(spec.dataset, data_roots=[]))
    with pytest.raises(ValueError, match="conditional"):
        sample_trained(trained, 10)
    assert sample_trained(trained, 10, np.ones((10, 1), "f4")).shape == (10, 2)
