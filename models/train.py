"""The training loop: one file, top to bottom.

data (physical units) -> preprocessing -> n_critic critic steps + 1 generator step, repeated
at most `steps` times -> the generator (its EMA when training.ema is set) that scored best on
the validation rows, a critic and the transforms that map back to physical units.
Checkpoints hold everything needed to continue bit-for-bit on CPU: G, D, EMA, both optimisers,
the step, the RNG states and the best validated weights so far.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from models.acceleration import explained_compile_errors, step_view
from models.architectures import build_critic, build_generator
from models.datasets import Dataset
from models.objectives import get_objective
from models.preprocessing import Transform, fit_transform
from models.referee import Referee
from models.selection import Validator, has_batchnorm, refresh_batchnorm
from models.spec import JobSpec, TrainingSpec
from models.weights import WeightRegression, check_weights, has_negative
from models.workdir import CHECKPOINT_NAME


class Cancelled(Exception):
    """should_stop() asked the loop to stop; a checkpoint of the steps done was written."""


@dataclass
class Progress:
    step: int
    total_steps: int
    losses: dict[str, float]
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainedModel:
    spec: JobSpec
    generator: nn.Module  # the EMA generator when training.ema is set, in eval mode
    critic: nn.Module
    feature_transform: Transform
    condition_transform: Transform | None
    feature_names: list[str]
    condition_names: list[str]
    image_shape: tuple[int, int, int] | None
    device: str
    history: list[Progress]
    resumed_from: int | None = None
    # Model selection: the step whose weights were kept, its validation score, and the step the
    # loop ended at (< steps when it stopped early). best_step None: no validation ran.
    best_step: int | None = None
    best_score: float | None = None
    last_step: int = 0


@torch.no_grad()
def sample_trained(trained: TrainedModel, n: int, conditions: np.ndarray | None = None,
                   seed: int = 0) -> np.ndarray:
    """n samples [n, F] in physical units from the trained generator (PyTorch, for checks)."""
    gen = torch.Generator().manual_seed(seed)
    assert trained.spec.architecture.latent_dim is not None  # train resolves it
    z = torch.randn(n, trained.spec.architecture.latent_dim, generator=gen)
    device = next(trained.generator.parameters()).device
    a = None
    if trained.condition_transform is not None:
        if conditions is None:
            raise ValueError("this generator is conditional: pass conditions [n, C]")
        a = torch.as_tensor(trained.condition_transform.forward(conditions), dtype=torch.float32)
        a = a.to(device)
    out = trained.generator(z.to(device), a).cpu().numpy()
    return trained.feature_transform.inverse(out)


def resolve_device(requested: str) -> torch.device:
    """'auto' and 'cuda' use the GPU when one is present; without one both fall back to CPU."""
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def make_optimizer(params, lr: float, t: TrainingSpec) -> torch.optim.Optimizer:
    if t.optimizer == "adam":
        assert t.betas is not None  # filled from the recipe
        return torch.optim.Adam(params, lr=lr, betas=t.betas)
    if t.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=t.momentum or 0.0)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """Average the weights only: batch-norm statistics of the average are recomputed from its
    own activations where they are used (models.selection.refresh_batchnorm)."""
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        p_ema.lerp_(p, 1 - decay)


def _rng_state() -> dict:
    state: dict = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_atomic(obj: dict, path: Path) -> None:
    # A worker killed mid-write must not leave a truncated checkpoint behind.
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _normalised_weights(weights: np.ndarray | None, device: torch.device) -> Tensor | None:
    if weights is None:
        return None
    # Mean 1, so weighted and unweighted losses share a scale.
    w = weights.astype(np.float64)
    return torch.as_tensor(w / w.mean(), dtype=torch.float32, device=device)


def _observables(data: Dataset) -> np.ndarray:
    return np.concatenate([data.conditions, data.features], axis=1)


def training_weights(spec: JobSpec, data: Dataset, validation: Dataset | None
                     ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(weights of the training rows, of the validation rows) as training uses them: the
    given ones, or their regression E[w | a, x] (dataset.regress_weights; null: when some
    weight is negative)."""
    val_weights = validation.weights if validation is not None else None
    regress = spec.dataset.regress_weights
    if regress is None:
        regress = has_negative(data.weights)
    if not regress or data.weights is None:
        return data.weights, val_weights
    regression = WeightRegression(_observables(data), data.weights, seed=spec.training.seed)
    if validation is not None and validation.weights is not None:
        val_weights = regression.predict(_observables(validation))
    return regression.fitted, val_weights


def train(
    spec: JobSpec,
    data: Dataset,
    *,
    validation: Dataset | None = None,
    workdir: Path | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainedModel:
    t = spec.training
    weights, val_weights = training_weights(spec, data, validation)
    check_weights(spec.objective.name, weights)
    device = resolve_device(t.device)
    torch.manual_seed(t.seed)
    np.random.seed(t.seed % 2**32)

    # --- data, in the model's units -----------------------------------------------------------
    assert spec.dataset.preprocessing is not None  # filled when the spec is validated
    feature_tf = fit_transform(spec.dataset.preprocessing, data.features)
    x_all = torch.as_tensor(feature_tf.forward(data.features), dtype=torch.float32, device=device)
    n_rows, n_features = x_all.shape
    spec = spec.with_latent_dim(n_features, data.conditions.shape[1])  # null: by the data
    n_conditions = data.conditions.shape[1] if data.conditions is not None else 0
    cond_tf = None
    a_all = None
    if n_conditions:
        assert spec.dataset.preprocessing is not None  # as above: with_latent_dim keeps it
        cond_tf = fit_transform(spec.dataset.preprocessing, data.conditions,
                                categorical=data.category_sizes)
        a_all = torch.as_tensor(cond_tf.forward(data.conditions), dtype=torch.float32, device=device)
        n_conditions = a_all.shape[1]  # a categorical condition: its K one-hot columns
    w_all = _normalised_weights(weights, device)
    # Non-negative weights: batches are drawn with probability proportional to the weight
    # (importance resampling), so every row of a batch counts once. The weighted law is the
    # same, E_w[f] = E_{i ~ w}[f], with far less variance per batch than uniform rows times
    # their weights (measured on splot-toy: docs/quality.md). Signed weights cannot be
    # probabilities: their batches are uniform and every loss term carries the weight.
    w_cdf = None
    if w_all is not None and bool((w_all >= 0).all()):
        w_cdf = torch.cumsum(w_all.double(), 0)
        w_cdf = (w_cdf / w_cdf[-1]).float()

    # --- models and optimisers ----------------------------------------------------------------
    objective = get_objective(spec.objective)
    arch = spec.architecture
    assert arch.latent_dim is not None  # resolved above (with_latent_dim)
    G = build_generator(arch, n_features, n_conditions, data.image_shape).to(device)
    D = build_critic(arch, n_features, n_conditions, data.image_shape, objective.critic_dim)
    D = D.to(device)
    G_ema = copy.deepcopy(G).eval() if t.ema else None
    assert t.lr_g is not None and t.lr_d is not None  # filled from the recipe
    opt_g = make_optimizer(G.parameters(), t.lr_g, t)
    opt_d = make_optimizer(D.parameters(), t.lr_d, t)
    # One scheduler step per generator step, for both optimisers.
    factor = (lambda i: max(0.0, 1 - i / t.steps)) if t.lr_schedule == "linear" else (lambda i: 1.0)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in (opt_g, opt_d)]
    # The views the steps call (training.compile, training.precision); G and D stay the plain
    # networks that checkpoints, the EMA, validation, the referee and the export read.
    G_step = step_view(G, compile=t.compile, precision=t.precision, device=device)
    D_step = step_view(D, compile=t.compile, precision=t.precision, device=device)
    referee = Referee(n_features, n_conditions, t.seed, device) if t.referee_every else None
    referee_auc: float | None = None
    validator = None
    if validation is not None and t.validate_every:
        x_val = torch.as_tensor(feature_tf.forward(validation.features), dtype=torch.float32,
                                device=device)
        a_val = None
        if cond_tf is not None:
            a_val = torch.as_tensor(cond_tf.forward(validation.conditions), dtype=torch.float32,
                                    device=device)
        validator = Validator(x_val, a_val, _normalised_weights(val_weights, device),
                              arch.latent_dim, t.seed)
    needs_bn_refresh = G_ema is not None and has_batchnorm(G)
    best: dict = {"step": None, "score": None, "generator": None, "since": 0}
    finished = False

    # --- resume ---------------------------------------------------------------------------------
    start_step, resumed_from = 0, None
    history: list[Progress] = []
    ckpt_path = workdir / CHECKPOINT_NAME if workdir is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        if ckpt["spec_hash"] == spec.spec_hash():
            G.load_state_dict(ckpt["generator"])
            D.load_state_dict(ckpt["critic"])
            if G_ema is not None:
                G_ema.load_state_dict(ckpt["generator_ema"])
            opt_g.load_state_dict(ckpt["opt_g"])
            opt_d.load_state_dict(ckpt["opt_d"])
            for sched, state in zip(schedulers, ckpt["schedulers"], strict=True):
                sched.load_state_dict(state)
            _set_rng_state(ckpt["rng"])
            if referee is not None and ckpt.get("referee"):
                referee.load_state_dict(ckpt["referee"])
                referee_auc = ckpt.get("referee_auc")
            start_step = resumed_from = int(ckpt["step"])
            history = [Progress(**p) for p in ckpt["history"]]
            best = ckpt.get("best") or best
            finished = bool(ckpt.get("finished", False))

    def checkpoint(step: int) -> None:
        if ckpt_path is None:
            return
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        _save_atomic(
            {
                "spec_hash": spec.spec_hash(),
                "step": step,
                "generator": G.state_dict(),
                "critic": D.state_dict(),
                "generator_ema": G_ema.state_dict() if G_ema is not None else {},
                "opt_g": opt_g.state_dict(),
                "opt_d": opt_d.state_dict(),
                "schedulers": [sched.state_dict() for sched in schedulers],
                "rng": _rng_state(),
                "history": [vars(p) for p in history],
                "referee": referee.state_dict() if referee is not None else {},
                "referee_auc": referee_auc,
                "best": best,
                "finished": finished,
            },
            ckpt_path,
        )

    def exported_generator() -> nn.Module:
        """The generator as it would be exported now (EMA with its own batch-norm stats)."""
        if G_ema is None:
            return G
        if needs_bn_refresh:
            assert arch.latent_dim is not None and t.batch_size is not None  # as in generate
            refresh_batchnorm(G_ema, a_all, n_rows, arch.latent_dim, t.batch_size, t.seed)
        return G_ema

    def validate(step: int) -> dict[str, float]:
        assert validator is not None
        generator = exported_generator()
        score = validator.score(generator)
        if best["score"] is None or score < best["score"]:
            state = {k: v.detach().clone() for k, v in generator.state_dict().items()}
            best.update(step=step, score=score, generator=state, since=0)
        else:
            best["since"] += 1
        return {"validation_swd": score, "best_validation_swd": best["score"],
                "best_step": float(best["step"])}

    def noise_scale(step: int) -> float:
        return t.instance_noise * max(0.0, 1.0 - step / t.steps) if t.instance_noise else 0.0

    def noisy(x: Tensor, scale: float) -> Tensor:
        return x + scale * torch.randn_like(x) if scale > 0 else x

    def batch() -> tuple[Tensor, Tensor | None, Tensor | None]:
        # Sampling with replacement from the global RNG keeps resume exact: no epoch state.
        assert t.batch_size is not None  # filled from the recipe
        if w_cdf is not None:
            u = torch.rand(t.batch_size, device=device)
            idx = torch.searchsorted(w_cdf, u).clamp_(max=n_rows - 1)
            return x_all[idx], a_all[idx] if a_all is not None else None, None
        idx = torch.randint(0, n_rows, (t.batch_size,), device=device)
        return (
            x_all[idx],
            a_all[idx] if a_all is not None else None,
            w_all[idx] if w_all is not None else None,
        )

    def generate(cond: Tensor | None) -> Tensor:
        # latent_dim: resolved above; batch_size: filled from the recipe.
        assert arch.latent_dim is not None and t.batch_size is not None
        z = torch.randn(t.batch_size, arch.latent_dim, device=device)  # [B, latent_dim]
        return G_step(z, cond)

    # --- the loop ---------------------------------------------------------------------------------
    G.train()
    D.train()
    tic, tic_step = time.perf_counter(), start_step
    last_step = start_step
    with explained_compile_errors(t.compile):
        for step in range(start_step, t.steps):
            if finished:
                break
            if should_stop is not None and should_stop():
                checkpoint(step)  # a job handed back or cancelled loses no finished step
                raise Cancelled(f"cancelled at step {step}")

            sigma = noise_scale(step)
            assert t.n_critic is not None and t.batch_size is not None  # filled from the recipe
            for _ in range(t.n_critic):
                real, cond, w = batch()
                with torch.no_grad():
                    fakes = [noisy(generate(cond), sigma) for _ in range(objective.n_fakes)]
                d_loss, d_logs = objective.critic_loss(D_step, noisy(real, sigma), fakes, cond, w)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                objective.after_critic_step(D)

            real, cond, w = batch()
            fakes = [generate(cond) for _ in range(objective.n_fakes)]
            g_loss, g_logs = objective.generator_loss(
                D_step, noisy(real, sigma), [noisy(f, sigma) for f in fakes], cond, w)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            if G_ema is not None:
                assert t.ema is not None  # G_ema exists only when t.ema is set
                ema_update(G_ema, G, t.ema)
            for sched in schedulers:
                sched.step()

            done = last_step = step + 1
            if referee is not None:
                assert t.referee_every is not None  # the referee exists only when it is set
                referee.update(real, fakes[0], cond, w)
                if done % t.referee_every == 0 or done == t.steps:
                    referee_auc = referee.auc(G, x_all, a_all, 2 * t.batch_size, arch.latent_dim)
            validation_logs: dict[str, float] = {}
            if validator is not None and (done % t.validate_every == 0 or done == t.steps):
                validation_logs = validate(done)
                if t.patience and best["since"] >= t.patience:
                    finished = True  # early stop: `patience` scores without improvement
            if done % t.log_every == 0 or done == t.steps or validation_logs or finished:
                elapsed = time.perf_counter() - tic
                rate = (done - tic_step) / elapsed if elapsed > 0 else 0.0
                tic, tic_step = time.perf_counter(), done
                progress = Progress(
                    step=done,
                    total_steps=t.steps,
                    losses={"critic": d_loss.item(), "generator": g_loss.item()}
                    | {f"critic/{k}": float(v) for k, v in d_logs.items()}
                    | {f"generator/{k}": float(v) for k, v in g_logs.items()},
                    metrics={"steps_per_second": rate,
                             "eta_seconds": (t.steps - done) / rate if rate > 0 else 0.0}
                    | ({"referee_auc": referee_auc} if referee_auc is not None else {})
                    | validation_logs
                    | ({"instance_noise": sigma} if t.instance_noise else {})
                    | ({"stopped_early": 1.0} if finished else {}),
                )
                if not all(np.isfinite(v) for v in progress.losses.values()):
                    raise FloatingPointError(f"non-finite loss at step {done}: {progress.losses}")
                history.append(progress)
                if on_progress is not None:
                    on_progress(progress)
            if done % t.checkpoint_every == 0 and done < t.steps and not finished:
                checkpoint(done)
    finished = True
    checkpoint(last_step)

    final_g = exported_generator()
    if best["generator"] is not None:
        final_g.load_state_dict(best["generator"])
    return TrainedModel(
        spec=spec,
        generator=final_g.eval(),
        critic=D.eval(),
        feature_transform=feature_tf,
        condition_transform=cond_tf,
        feature_names=list(data.feature_names),
        condition_names=list(data.condition_names),
        image_shape=data.image_shape,
        device=str(device),
        history=history,
        resumed_from=resumed_from,
        best_step=best["step"],
        best_score=best["score"],
        last_step=last_step,
    )
