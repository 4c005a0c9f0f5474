"""The quality suite: every objective with its DEFAULT recipe on a set of cases.

Each run trains the minimal spec of a job, e.g.

    {"objective": "wgan-gp", "dataset": {"uri": "builtin://8gaussians"},
     "training": {"steps": 5000, "seed": 1}}

(only the objective, the data set's URI and roles, the steps and the seed: every other field
comes from the objective's "default" recipe, models/spec.py) through the same path as a job
(models.pipeline.run_job): the holdout rows (dataset.holdout_fraction) and then the validation
rows (dataset.validation_fraction) are split off with models.pipeline.split_for_training, and
models.train.train runs with that validation set (model selection and early stopping included,
so a run may end before --steps: the table reports the step it ended at and the step whose
weights were kept). The trained PyTorch generator (the weights a job exports) is then measured
on the held-out rows or on the data set's true law. One thread per run (torch and OpenMP), so
CPU results repeat bit for bit.

Cases and their metrics (`--list` prints them):

- ring (builtin://8gaussians) and grid (builtin://25gaussians): the 3-sigma rule of VEEGAN /
  PacGAN on 2,500 samples (models.metrics.mode_coverage): modes captured out of 8 (25) and the
  high-quality share, the share of samples within 3 sigma of their nearest mode centre.
- two-gaussians (builtin://two-gaussians, 0.7 N(5, 0.8) + 0.3 N(-4, 1), the mode-collapse
  example): the share of generated mass in each mode (the mean of
  two_gaussian_responsibilities over the samples), "both kept" when each share lies within
  0.05 of 0.7 / 0.3, and the 1-D Wasserstein distance W1 to the held-out rows.
- conditional-ring (builtin://conditional-ring, (x, y) ~ N(2 (cos a, sin a), 0.1^2) given the
  angle a): at the held-out rows' angles, the share of samples within 3 sigma
  (CONDITIONAL_RING_STD) of the asked angle's centre (the true law scores 1 - exp(-4.5) =
  0.989) and the spread ratio, the RMS per coordinate of (sample - centre) divided by the
  true std (1 for the true law; near 0 for a generator that outputs the centre, above 1 for
  one too wide or off centre).
- digits (builtin://digits conditioned on the class, `"conditions": ["digit"],
  "categorical": ["digit"]`): models.report.image_measures: the accuracy of a classifier
  (MLPClassifier) fitted on the real training digits at telling the asked class of digits
  generated at the held-out rows' classes (three per held-out row) and the Frechet distance on
  its hidden features; plus the classifier two-sample AUC (below) of held-out vs generated
  (class + pixels). Reference row "(real held-out)": that classifier's accuracy on the real
  held-out digits, the ceiling of the first number.
- zmumu (file:///work/shared/data/Zmumu.root, tree `events`, 2,304 CMS dimuon rows of the
  scikit-hep test data): the second muon's kinematics (pt2, eta2, phi2) generated conditioned
  on the first muon's (pt1, eta1, phi1). The held-out classifier two-sample AUC on conditions
  + features, and the W1 (GeV) between the dimuon masses of (real muon 1, generated muon 2)
  and (real muon 1, real muon 2), massless muons, M^2 = 2 pt1 pt2 (cosh d_eta - cos d_phi):
  the Z peak is the joint law's sharpest feature. Skipped, with the reason printed, where the
  file is absent. (The file lists some events twice, with both muons' roles swapped or with
  another muon-type pair, so held-out rows may have a near twin among the training rows.)
- lamarr (builtin://lamarr-toy): the held-out classifier two-sample AUC. Reference row
  "(conditions shuffled)": the AUC of the real targets shuffled across the held-out rows'
  conditions, i.e. of a generator with the right marginal law that ignores the conditions.
  zmumu gets the same reference row.
- splot (builtin://splot-toy, `"weights": "sweight"`) and splot-unweighted (the same rows
  without weights, signal + background): the classifier two-sample AUC between rows generated
  at the pt of fresh pure-signal rows and those rows (pt, x1, x2), drawn from the truth
  splot_toy_signal. The classifier-type objectives (minimax, nsgan, lsgan, fgan, hinge) refuse
  negative weights (models.objectives.check_weights raises DataError): those rows read
  "refused: <message>", the intended behaviour.

The classifier two-sample AUC (c2st_auc): scikit-learn's HistGradientBoostingClassifier (100
iterations, no early stopping) on real (label 1) vs generated (label 0) rows, conditions +
features, at most 20,000 rows each; fitted on a stratified half and scored (ROC AUC) on the
other half. 0.5: the classifier cannot tell them apart; 1: fully separable.

Reproduce the table (docs/quality-table.md; rows are merged by (case, objective, seed), so
separate invocations build one table, and the JSON in --out is merged the same way):

    OMP_NUM_THREADS=1 .venv/bin/python bench/quality.py --seeds 1,2,3 --jobs 2
    .venv/bin/python bench/quality.py --cases ring,grid --objectives wgan-gp,nsgan --seeds 1
    .venv/bin/python bench/quality.py --list

The evaluation is importable (tests/models/test_quality.py): `run_case(case, objective, seed,
steps)` trains and measures one row; `evaluate_case(case, trained, train_data, held, seed)`
measures a trained model.
"""

from __future__ import annotations

import os
import sys

if __name__ in ("__main__", "__mp_main__"):  # run as a script (or its worker): one thread
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.datasets import Dataset, load_dataset  # noqa: E402
from models.datasets.base import DataError  # noqa: E402
from models.datasets.builtin import (  # noqa: E402
    CONDITIONAL_RING_STD,
    conditional_ring_centre,
    splot_toy_signal,
    two_gaussian_responsibilities,
    two_gaussian_weights,
)
from models.metrics import mode_coverage  # noqa: E402
from models.pipeline import (  # noqa: E402
    N_QUALITY_SAMPLES,
    sample_trained,
    split_for_training,
)
from models.spec import OBJECTIVE_NAMES, JobSpec  # noqa: E402
from models.train import TrainedModel, train  # noqa: E402

DATA_ROOT = Path("/work/shared/data")
ZMUMU_PATH = DATA_ROOT / "Zmumu.root"
DEFAULT_OUT = Path("bench/out/quality.json")
DEFAULT_MARKDOWN = Path("docs/quality-table.md")

EVAL_ROWS = 20_000  # rows of each side in a two-sample comparison, at most
C2ST_MAX_ITER = 100
TWO_GAUSSIANS_SHARE_TOLERANCE = 0.05  # each mode's generated share within this of 0.7 / 0.3
CONDITIONAL_RING_EVAL_ROWS = 5_000
SPLOT_TRUTH_ROWS = 10_000  # fresh pure-signal rows of splot-toy's true law
DIGITS_COPIES = 3  # generated digits per held-out row for the class accuracy
SHUFFLED = "(conditions shuffled)"
REAL = "(real held-out)"


# --- measures ---------------------------------------------------------------------------------


def c2st_auc(real: np.ndarray, gen: np.ndarray, *, seed: int = 0,
             max_rows: int = EVAL_ROWS) -> float:
    """Classifier two-sample test: HistGradientBoostingClassifier on real (1) vs generated (0)
    rows [N, D] (conditions + features), fitted on a stratified half, ROC AUC on the other half.
    At most `max_rows` rows of each side (a seeded random subset)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(seed)
    if len(real) > max_rows:
        real = real[rng.choice(len(real), max_rows, replace=False)]
    if len(gen) > max_rows:
        gen = gen[rng.choice(len(gen), max_rows, replace=False)]
    x = np.concatenate([real, gen]).astype(np.float32)
    y = np.concatenate([np.ones(len(real)), np.zeros(len(gen))])
    x_fit, x_test, y_fit, y_test = train_test_split(x, y, test_size=0.5, random_state=seed,
                                                    stratify=y)
    clf = HistGradientBoostingClassifier(max_iter=C2ST_MAX_ITER, early_stopping=False,
                                         random_state=seed)
    clf.fit(x_fit, y_fit)
    return float(roc_auc_score(y_test, clf.predict_proba(x_test)[:, 1]))


def _rows(data: Dataset, n: int, seed: int) -> np.ndarray:
    """Indices of at most n rows of data (a seeded sorted subset)."""
    if data.n_rows <= n:
        return np.arange(data.n_rows)
    return np.sort(np.random.default_rng(seed).choice(data.n_rows, n, replace=False))


def _joint(cond: np.ndarray | None, features: np.ndarray) -> np.ndarray:
    return features if cond is None or cond.shape[1] == 0 else np.concatenate([cond, features], 1)


def dimuon_mass(pt1, eta1, phi1, pt2, eta2, phi2) -> np.ndarray:
    """Invariant mass of two massless muons: M^2 = 2 pt1 pt2 (cosh(eta1 - eta2) - cos(phi1 -
    phi2))."""
    m2 = 2.0 * pt1 * pt2 * (np.cosh(eta1 - eta2) - np.cos(phi1 - phi2))
    return np.sqrt(np.clip(m2, 0.0, None))


def eval_modes(trained: TrainedModel, train_data: Dataset, held: Dataset,
               seed: int) -> dict[str, Any]:
    samples = sample_trained(trained, N_QUALITY_SAMPLES, seed=seed)
    cov = mode_coverage(samples, train_data.modes, train_data.mode_std)
    return {"modes_captured": cov.modes_captured, "n_modes": cov.n_modes,
            "high_quality_fraction": cov.high_quality_fraction}


def eval_two_gaussians(trained: TrainedModel, train_data: Dataset, held: Dataset,
                       seed: int) -> dict[str, Any]:
    from scipy.stats import wasserstein_distance

    real = held.features[_rows(held, EVAL_ROWS, seed), 0]
    gen = sample_trained(trained, len(real), seed=seed)[:, 0]
    shares = two_gaussian_responsibilities(gen).mean(0)
    truth = two_gaussian_weights()
    return {"share_major": float(shares[0]), "share_minor": float(shares[1]),
            "modes_kept": bool(np.all(np.abs(shares - truth) <= TWO_GAUSSIANS_SHARE_TOLERANCE)),
            "w1": float(wasserstein_distance(real, gen))}


def eval_conditional_ring(trained: TrainedModel, train_data: Dataset, held: Dataset,
                          seed: int) -> dict[str, Any]:
    cond = held.conditions[_rows(held, CONDITIONAL_RING_EVAL_ROWS, seed)]
    gen = sample_trained(trained, len(cond), cond, seed=seed)
    resid = gen - conditional_ring_centre(cond[:, 0])
    dist = np.linalg.norm(resid, axis=1)
    rms = float(np.sqrt((resid**2).mean()))  # per coordinate
    return {"within_3_sigma": float((dist <= 3 * CONDITIONAL_RING_STD).mean()),
            "spread_ratio": rms / CONDITIONAL_RING_STD}


def _digit_labels(conditions: np.ndarray) -> np.ndarray:
    """Class per row: the categorical `digit` code [N, 1], or the argmax of the one-hot
    digit_0..digit_9 columns [N, 10]."""
    if conditions.shape[1] == 1:
        return conditions[:, 0].astype(np.int64)
    return conditions.argmax(1)


def eval_digits(trained: TrainedModel, train_data: Dataset, held: Dataset,
                seed: int) -> dict[str, Any]:
    from models.report import image_measures

    cond = np.tile(held.conditions, (DIGITS_COPIES, 1))  # each held-out row's class, 3 times
    gen = sample_trained(trained, len(cond), cond, seed=seed)
    images = image_measures(train_data.features, held.features, gen,
                            labels_train=_digit_labels(train_data.conditions),
                            asked=_digit_labels(cond), seed=seed)
    gen_held = gen[:held.n_rows]  # the first copy: one generated row per held-out row
    auc = c2st_auc(_joint(held.conditions, held.features), _joint(held.conditions, gen_held),
                   seed=seed)
    return {"asked_class_accuracy": images.get("asked_class_share"),
            "c2st_auc": auc, "frechet_distance": images.get("frechet_distance")}


def eval_conditional_c2st(trained: TrainedModel, train_data: Dataset, held: Dataset,
                          seed: int) -> dict[str, Any]:
    idx = _rows(held, EVAL_ROWS, seed)
    cond, real = held.conditions[idx], held.features[idx]
    gen = sample_trained(trained, len(cond), cond, seed=seed)
    return {"c2st_auc": c2st_auc(_joint(cond, real), _joint(cond, gen), seed=seed)}


def eval_zmumu(trained: TrainedModel, train_data: Dataset, held: Dataset,
               seed: int) -> dict[str, Any]:
    from scipy.stats import wasserstein_distance

    idx = _rows(held, EVAL_ROWS, seed)
    cond, real = held.conditions[idx], held.features[idx]
    gen = sample_trained(trained, len(cond), cond, seed=seed)
    c = {n: cond[:, i].astype(np.float64) for i, n in enumerate(held.condition_names)}

    def mass(f: np.ndarray) -> np.ndarray:
        g = {n: f[:, i].astype(np.float64) for i, n in enumerate(held.feature_names)}
        return dimuon_mass(c["pt1"], c["eta1"], c["phi1"], g["pt2"], g["eta2"], g["phi2"])

    return {"c2st_auc": c2st_auc(_joint(cond, real), _joint(cond, gen), seed=seed),
            "mass_w1": float(wasserstein_distance(mass(real), mass(gen)))}


def eval_splot(trained: TrainedModel, train_data: Dataset, held: Dataset,
               seed: int) -> dict[str, Any]:
    truth = splot_toy_signal(SPLOT_TRUTH_ROWS, np.random.default_rng([seed, 0x5107]))
    pt = truth[:, :1]
    gen = sample_trained(trained, len(pt), pt, seed=seed)
    return {"c2st_auc": c2st_auc(truth, np.concatenate([pt, gen], 1), seed=seed)}


# --- reference rows (no training) ---------------------------------------------------------------


def reference_shuffled(train_data: Dataset, held: Dataset, seed: int) -> dict[str, Any]:
    """The AUC of real targets shuffled across the held-out conditions: a generator with the
    right marginal law that ignores the conditions."""
    idx = _rows(held, EVAL_ROWS, seed)
    cond, real = held.conditions[idx], held.features[idx]
    shuffled = real[np.random.default_rng(seed).permutation(len(real))]
    return {"c2st_auc": c2st_auc(_joint(cond, real), _joint(cond, shuffled), seed=seed)}


def reference_digits(train_data: Dataset, held: Dataset, seed: int) -> dict[str, Any]:
    """The digit classifier's accuracy on the real held-out digits (the ceiling of
    asked_class_accuracy)."""
    from models.report import image_measures

    images = image_measures(train_data.features, held.features, held.features,
                            labels_train=_digit_labels(train_data.conditions),
                            asked=_digit_labels(held.conditions),
                            seed=seed)
    return {"asked_class_accuracy": images.get("asked_class_share")}


# --- cases ------------------------------------------------------------------------------------


def _fmt_modes(m: dict) -> str:
    return f"{m['modes_captured']}/{m['n_modes']} modes, high-quality {m['high_quality_fraction']:.3f}"


def _fmt_two(m: dict) -> str:
    kept = "both kept" if m["modes_kept"] else "NOT both kept"
    return f"shares {m['share_major']:.3f}/{m['share_minor']:.3f} ({kept}), W1 {m['w1']:.3f}"


def _fmt_ring(m: dict) -> str:
    return f"within 3 sigma {m['within_3_sigma']:.3f}, spread ratio {m['spread_ratio']:.2f}"


def _num(x: Any, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def _fmt_digits(m: dict) -> str:
    parts = [f"class accuracy {_num(m.get('asked_class_accuracy'), '.3f')}"]
    if "c2st_auc" in m:
        parts.append(f"AUC {m['c2st_auc']:.3f}")
    if "frechet_distance" in m:
        parts.append(f"FD {_num(m['frechet_distance'], '.2f')}")
    return ", ".join(parts)


def _fmt_auc(m: dict) -> str:
    out = f"AUC {m['c2st_auc']:.3f}"
    if "mass_w1" in m:
        out += f", mass W1 {m['mass_w1']:.2f} GeV"
    return out


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    dataset: dict[str, Any]
    evaluate: Callable[[TrainedModel, Dataset, Dataset, int], dict[str, Any]]
    summary: Callable[[dict], str]
    # (objective column, measure) rows computed from the data alone, once per invocation
    references: tuple[tuple[str, Callable[[Dataset, Dataset, int], dict[str, Any]]], ...] = ()
    needs: Path | None = None  # a file the case reads; absent: skipped


CASES: dict[str, Case] = {c.name: c for c in (
    Case("ring", "builtin://8gaussians: modes captured / 8 and high-quality share (3-sigma "
         "rule, 2500 samples)", {"uri": "builtin://8gaussians"}, eval_modes, _fmt_modes),
    Case("grid", "builtin://25gaussians: modes captured / 25 and high-quality share (3-sigma "
         "rule, 2500 samples)", {"uri": "builtin://25gaussians"}, eval_modes, _fmt_modes),
    Case("two-gaussians", "builtin://two-gaussians: each mode's generated share within 0.05 "
         "of 0.7/0.3, W1 to the held-out rows", {"uri": "builtin://two-gaussians"},
         eval_two_gaussians, _fmt_two),
    Case("conditional-ring", "builtin://conditional-ring: share within 3 sigma of the asked "
         "angle's centre, generated/true spread", {"uri": "builtin://conditional-ring"},
         eval_conditional_ring, _fmt_ring),
    Case("digits", "builtin://digits given the class (categorical `digit`): asked-class "
         "accuracy of a classifier fitted on real digits, C2ST AUC, Frechet distance",
         {"uri": "builtin://digits", "conditions": ["digit"], "categorical": ["digit"]},
         eval_digits, _fmt_digits, references=((REAL, reference_digits),)),
    Case("zmumu", f"{ZMUMU_PATH} (tree events): muon 2 (pt2, eta2, phi2) given muon 1 (pt1, "
         "eta1, phi1): held-out C2ST AUC, dimuon mass W1",
         {"uri": f"file://{ZMUMU_PATH}", "table": "events", "features": ["pt2", "eta2", "phi2"],
          "conditions": ["pt1", "eta1", "phi1"]},
         eval_zmumu, _fmt_auc, references=((SHUFFLED, reference_shuffled),), needs=ZMUMU_PATH),
    Case("lamarr", "builtin://lamarr-toy: held-out C2ST AUC (conditions + targets)",
         {"uri": "builtin://lamarr-toy"}, eval_conditional_c2st, _fmt_auc,
         references=((SHUFFLED, reference_shuffled),)),
    Case("splot", "builtin://splot-toy with sWeights: C2ST AUC vs fresh pure-signal rows "
         "(the truth)", {"uri": "builtin://splot-toy", "weights": "sweight"}, eval_splot,
         _fmt_auc),
    Case("splot-unweighted", "builtin://splot-toy without weights (signal + background): C2ST "
         "AUC vs fresh pure-signal rows", {"uri": "builtin://splot-toy"}, eval_splot, _fmt_auc),
)}


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = (_merged(out[key], value) if isinstance(value, dict)
                    and isinstance(out.get(key), dict) else value)
    return out


def minimal_spec(case: str, objective: str, seed: int, steps: int,
                 overrides: dict[str, Any] | None = None) -> JobSpec:
    """The minimal spec: objective, data set (URI and roles), steps and seed; the rest comes
    from the objective's default recipe. `overrides` (--set) are merged in, for sweeps."""
    spec = {"objective": {"name": objective}, "dataset": dict(CASES[case].dataset),
            "training": {"steps": steps, "seed": seed}}
    return JobSpec.model_validate(_merged(spec, overrides or {}))


def evaluate_case(case: str, trained: TrainedModel, train_data: Dataset,
                  held: Dataset | None, seed: int) -> dict[str, Any]:
    """The case's metrics for a trained model; held None (holdout_fraction 0): the training
    rows stand in for the held-out ones."""
    torch.manual_seed(seed)
    return CASES[case].evaluate(trained, train_data, held if held is not None else train_data,
                                seed)


def skip_reason(case: str) -> str | None:
    needs = CASES[case].needs
    if needs is not None and not needs.exists():
        return f"{case}: {needs} is absent, case skipped"
    return None


def _data_roots() -> list[Path]:
    return [DATA_ROOT]


def run_case(case: str, objective: str, seed: int, steps: int = 5000,
             overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the minimal spec of (case, objective, seed, steps) like a job and measure it: a
    row (status "ok", "refused: <DataError>" or "error: ...", metrics, steps, seconds)."""
    spec = minimal_spec(case, objective, seed, steps, overrides)
    recipe = spec.training.recipe
    if overrides:
        recipe += " + " + json.dumps(overrides, separators=(",", ":"))
    row: dict[str, Any] = {"case": case, "objective": objective,
                           "recipe": recipe, "seed": seed, "steps": steps,
                           "last_step": None, "best_step": None, "metrics": {},
                           "train_seconds": None, "eval_seconds": None}
    data = load_dataset(spec.dataset, data_roots=_data_roots())
    train_data, held, fit_data, validation = split_for_training(spec, data)
    tic = time.perf_counter()
    try:
        trained = train(spec, fit_data, validation=validation)
    except DataError as exc:
        row["status"] = f"refused: {exc}"
        return row
    row["train_seconds"] = round(time.perf_counter() - tic, 2)
    row.update(last_step=trained.last_step, best_step=trained.best_step,
               device=trained.device)
    tic = time.perf_counter()
    row["metrics"] = evaluate_case(case, trained, train_data, held, seed)
    row["eval_seconds"] = round(time.perf_counter() - tic, 2)
    row["status"] = "ok"
    return row


def reference_rows(case: str, seed: int) -> list[dict[str, Any]]:
    """The case's reference rows (no training), on the held-out rows of `seed`'s split."""
    out = []
    for label, measure in CASES[case].references:
        spec = minimal_spec(case, "wgan-gp", seed, 1)  # only the data set and the split count
        data = load_dataset(spec.dataset, data_roots=_data_roots())
        train_data, held, _, _ = split_for_training(spec, data)
        tic = time.perf_counter()
        metrics = measure(train_data, held if held is not None else train_data, seed)
        out.append({"case": case, "objective": label, "recipe": "-", "seed": seed,
                    "steps": None, "last_step": None, "best_step": None, "metrics": metrics,
                    "train_seconds": None, "eval_seconds": round(time.perf_counter() - tic, 2),
                    "status": "reference"})
    return out


def summary(row: dict[str, Any]) -> str:
    status = row.get("status", "")
    if status not in ("ok", "reference"):
        return status
    return CASES[row["case"]].summary(row["metrics"])


# --- running ----------------------------------------------------------------------------------


def _worker_init() -> None:
    torch.set_num_threads(1)


def _task(args: tuple[str, str, int, int, dict[str, Any] | None]) -> dict[str, Any]:
    case, objective, seed, steps, overrides = args
    torch.set_num_threads(1)
    try:
        return run_case(case, objective, seed, steps, overrides)
    except Exception as exc:  # one failing row must not end a sweep of hours
        traceback.print_exc()
        return {"case": case, "objective": objective, "recipe": "default", "seed": seed,
                "steps": steps, "last_step": None, "best_step": None, "metrics": {},
                "train_seconds": None, "eval_seconds": None,
                "status": f"error: {type(exc).__name__}: {exc}"}


def _csv(text: str, kind: Callable[[str], Any] = str) -> list:
    return [kind(x.strip()) for x in text.split(",") if x.strip()]


def _key(row: dict[str, Any]) -> tuple[str, str, str]:
    return (str(row["case"]), str(row["objective"]), str(row["seed"]))


def _order(key: tuple[str, str, str]) -> tuple:
    case, objective, seed = key
    cases, objectives = list(CASES), list(OBJECTIVE_NAMES)
    reference = not objective.startswith("(")
    return (cases.index(case) if case in cases else len(cases), case, reference,
            objectives.index(objective) if objective in objectives else len(objectives),
            objective, int(seed) if seed.isdigit() else seed)


def merge_json(path: Path, rows: list[dict[str, Any]], run: dict[str, Any]) -> None:
    """Merge rows into the JSON file by (case, objective, seed); the run is appended."""
    doc: dict[str, Any] = {"runs": [], "rows": []}
    if path.exists():
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError:
            print(f"warning: {path} is not JSON; starting it afresh", file=sys.stderr)
    merged = {_key(r): r for r in doc.get("rows", [])}
    merged.update({_key(r): r for r in rows})
    runs = [r for r in doc.get("runs", []) if r.get("id") != run["id"]] + [run]
    doc = {"runs": runs, "rows": [merged[k] for k in sorted(merged, key=_order)]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=float))


MD_HEADER = ["case", "objective", "recipe", "seed", "steps", "last step", "best step",
             "result", "train s", "date", "run"]
MD_TITLE = "# Quality of the default recipes"
MD_INTRO = ("Written by `bench/quality.py` (its docstring explains each metric and how to "
            "reproduce the table); rows are merged by (case, objective, seed), so separate "
            "invocations build one table. Minimal specs: only the objective, the data set, "
            "`training.steps` and `training.seed`; everything else is the objective's default "
            "recipe. `last step` < `steps`: early stopping; `best step`: the validated weights "
            "kept. `run`: the invocation below that produced the row.")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_RUN_LINE = re.compile(r"^(\d+)\. (.*)$")


def _cell(x: Any) -> str:
    return "" if x is None else str(x).replace("|", "\\|").replace("\n", " ")


def _parse_markdown(text: str) -> tuple[dict[tuple[str, str, str], list[str]], dict[int, str]]:
    rows: dict[tuple[str, str, str], list[str]] = {}
    runs: dict[int, str] = {}
    in_runs = False
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in _CELL_SPLIT.split(line.strip())[1:-1]]
            if len(cells) == len(MD_HEADER) and cells != MD_HEADER:
                rows[(cells[0], cells[1], cells[3])] = cells
        elif line.strip() == "Runs:":
            in_runs = True
        elif in_runs and (m := _RUN_LINE.match(line)):
            runs[int(m.group(1))] = m.group(2)
    return rows, runs


def merge_markdown(path: Path, rows: list[dict[str, Any]], run: dict[str, Any]) -> None:
    """Merge rows into the markdown table by (case, objective, seed); runs that no row refers
    to any more are dropped."""
    old_rows, runs = _parse_markdown(path.read_text()) if path.exists() else ({}, {})
    number = run.get("number") or (max(runs, default=0) + 1)
    run["number"] = number
    runs[number] = f"{run['date']}: `{run['command']}`"
    date = run["date"][:10]
    for r in rows:
        cells = [r["case"], r["objective"], r["recipe"], r["seed"], r["steps"], r["last_step"],
                 r["best_step"], summary(r), r["train_seconds"], date, number]
        old_rows[_key(r)] = [_cell(c) for c in cells]
    used = {int(c[-1]) for c in old_rows.values() if c[-1].isdigit()}
    lines = [MD_TITLE, "", MD_INTRO, "",
             "| " + " | ".join(MD_HEADER) + " |", "|" + "---|" * len(MD_HEADER)]
    lines += ["| " + " | ".join(old_rows[k]) + " |" for k in sorted(old_rows, key=_order)]
    lines += ["", "Runs:", ""]
    lines += [f"{n}. {runs[n]}" for n in sorted(runs) if n in used]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    header = ("case", "objective", "seed", "steps", "last", "best", "train s", "result")
    table = [header] + [(r["case"], r["objective"], str(r["seed"]), _cell(r["steps"]),
                         _cell(r["last_step"]), _cell(r["best_step"]), _cell(r["train_seconds"]),
                         summary(r)) for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(header) - 1)]
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths, strict=False)) + "  " + t[-1])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="The quality suite: every objective's default recipe on the cases "
                    "(see the module docstring for the metrics).")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated (--list)")
    parser.add_argument("--objectives", default=",".join(OBJECTIVE_NAMES),
                        help="comma-separated; default: all")
    parser.add_argument("--seeds", default="1", help="comma-separated training seeds")
    parser.add_argument("--steps", type=int, default=5000, help="training.steps (at most)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="parallel processes, one torch thread each")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON, merged")
    parser.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN,
                        help="markdown table, merged by (case, objective, seed)")
    parser.add_argument("--set", type=json.loads, default=None, metavar="JSON",
                        help="merged into every spec (a sweep): '{\"training\": {\"lr_g\": 1e-3}}'")
    parser.add_argument("--list", action="store_true", help="print the cases and exit")
    args = parser.parse_args(argv)

    if args.list:
        for case in CASES.values():
            print(f"{case.name:18s} {case.description}")
        return
    cases, objectives = _csv(args.cases), _csv(args.objectives)
    seeds = _csv(args.seeds, int)
    unknown = [c for c in cases if c not in CASES] + [o for o in objectives
                                                       if o not in OBJECTIVE_NAMES]
    if unknown:
        parser.error(f"unknown case(s)/objective(s) {unknown}; cases: {', '.join(CASES)}; "
                     f"objectives: {', '.join(OBJECTIVE_NAMES)}")
    if not seeds or args.jobs < 1 or args.steps < 1:
        parser.error("need at least one seed, --jobs >= 1 and --steps >= 1")
    torch.set_num_threads(1)
    for case in list(cases):
        if (reason := skip_reason(case)) is not None:
            print(reason)
            cases.remove(case)

    now = dt.datetime.now(dt.UTC)
    run = {"id": now.isoformat(timespec="seconds"), "date": now.strftime("%Y-%m-%d %H:%M UTC"),
           "command": shlex.join(["python", *sys.argv]) if argv is None
           else shlex.join(["python", "bench/quality.py", *argv]),
           "torch": torch.__version__}
    done: list[dict[str, Any]] = []

    def record(rows: list[dict[str, Any]]) -> None:
        done.extend(rows)
        for r in rows:
            print(f"[{len(done)}] {r['case']} {r['objective']} seed {r['seed']}: {summary(r)}"
                  + (f" ({r['train_seconds']} s)" if r.get("train_seconds") else ""),
                  flush=True)
        merge_markdown(args.markdown, rows, run)  # first: it numbers the run
        merge_json(args.out, rows, run)

    for case in cases:  # cheap, once per invocation
        if CASES[case].references:
            record(reference_rows(case, seeds[0]))

    tasks = [(c, o, s, args.steps, args.set) for c in cases for o in objectives for s in seeds]
    if args.jobs == 1:
        for task in tasks:
            record([_task(task)])
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=context,
                                 initializer=_worker_init) as pool:
            futures = [pool.submit(_task, task) for task in tasks]
            for future in as_completed(futures):
                record([future.result()])
    print()
    print_table(sorted(done, key=lambda r: _order(_key(r))))
    print(f"\nJSON: {args.out}  markdown: {args.markdown}")


if __name__ == "__main__":
    main()
