"""Honest evaluation of a trained run on its own test split: per-class metrics with confidence
intervals, calibration, the most confident mistakes, paired comparison of two runs, and Paper A's
own confusion matrix read with numbers (the controls that edit the images are in `controls`).

scikit-learn and SciPy compute every metric and test they have; what they lack (NPV, ECE, temperature
scaling) is written here in a few lines each. The percentile bootstrap is one loop: `scipy.stats.bootstrap`
(paired, percentile) gives the same accuracy interval for the same seed (tested), but it takes one call per
statistic (accuracy, macro-F1 and each class's sensitivity: six here, each resampling again) and returns NaN where
a resample lacks a class, which this loop leaves out of that class's interval.
"""

from __future__ import annotations

import dataclasses
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.stats import binomtest, chi2_contingency
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    multilabel_confusion_matrix,
    roc_auc_score,
)

from helpers import files, plots
from helpers.pipeline import unreadable_files
from helpers.runs import as_run, run_labels


def _ratio(numerator, denominator):
    return float(numerator / denominator) if denominator else None


def per_class_metrics(y_true, probabilities, classes) -> dict:
    """One-vs-rest sensitivity, specificity, PPV, NPV, ROC-AUC and PR-AUC per class.

    A value that is undefined for this test set (no positives, no predictions) is None, not a crash.
    """
    y_true = np.asarray(y_true)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    per_class = multilabel_confusion_matrix(y_true, probabilities.argmax(axis=1), labels=range(len(classes)))
    out = {}
    for k, cls in enumerate(classes):
        (tn, fp), (fn, tp) = per_class[k].tolist()
        positive = y_true == k
        both_kinds = positive.any() and (~positive).any()
        out[cls] = {
            "support": int(positive.sum()),
            "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp),
            "ppv": _ratio(tp, tp + fp),
            "npv": _ratio(tn, tn + fn),
            "roc_auc": float(roc_auc_score(positive, probabilities[:, k])) if both_kinds else None,
            "pr_auc": float(average_precision_score(positive, probabilities[:, k])) if both_kinds else None,
        }
    return out


def classification_metrics(y_true, probabilities, classes) -> dict:
    """Accuracy, balanced accuracy, macro-F1, per-class metrics and the confusion matrix."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(probabilities).argmax(axis=1)
    labels = list(range(len(classes)))
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    with warnings.catch_warnings():  # a class absent from the test set is reported as None above
        warnings.simplefilter("ignore")
        balanced = balanced_accuracy_score(y_true, y_pred)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class": per_class_metrics(y_true, probabilities, classes),
        "confusion_matrix": matrix.tolist(),
    }


def _counts_metrics(y_true, y_pred, k):
    """Accuracy, macro-F1 and per-class sensitivity from labels, fast enough for thousands of resamples."""
    matrix = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    tp = np.diag(matrix).astype(float)
    support, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        f1 = np.where(precision + np.nan_to_num(recall) > 0,
                      2 * precision * np.nan_to_num(recall) / (precision + np.nan_to_num(recall)), 0.0)
    return tp.sum() / len(y_true), f1.mean(), recall


def bootstrap_ci(y_true, probabilities, classes, n_resamples: int = 1000, seed: int = 0, level: float = 0.95):
    """Percentile bootstrap intervals (resampling test images with replacement) for accuracy, macro-F1
    and each class's sensitivity. Same seed, same intervals."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(probabilities).argmax(axis=1)
    k, n = len(classes), len(y_true)
    rng = np.random.default_rng(seed)
    accuracy, macro_f1, recall = [], [], []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        a, f, r = _counts_metrics(y_true[idx], y_pred[idx], k)
        accuracy.append(a)
        macro_f1.append(f)
        recall.append(r)
    recall = np.array(recall)
    tail = (1 - level) / 2 * 100

    def interval(values):
        values = np.asarray(values)[~np.isnan(values)]
        return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))] if values.size else None

    return {
        "level": level, "resamples": n_resamples, "seed": seed,
        "accuracy": interval(accuracy), "macro_f1": interval(macro_f1),
        "sensitivity": {cls: interval(recall[:, i]) for i, cls in enumerate(classes)},
    }


# --------------------------------------------------------------------------- class mix and prevalence


def predictive_values(sensitivity, specificity, prevalence):
    """(PPV, NPV) at each `prevalence` (array-like) from one sensitivity and specificity, by Bayes' rule.

    A test set's PPV and NPV hold only at its own class mix; a class-balanced sample or a clinic has another.
    Sensitivity does not depend on it; with more than two classes, one-vs-rest specificity depends on how the other
    classes are mixed among the negatives, so carry it over only with that mix, or re-weight it to the target's
    (`specificity_at_mix`). Undefined values (nothing called positive, or negative) are NaN.
    """
    p = np.asarray(prevalence, dtype=np.float64)
    true_pos, false_neg = sensitivity * p, (1 - sensitivity) * p
    true_neg, false_pos = specificity * (1 - p), (1 - specificity) * (1 - p)
    with np.errstate(invalid="ignore", divide="ignore"):
        ppv = np.where(true_pos + false_pos > 0, true_pos / (true_pos + false_pos), np.nan)
        npv = np.where(true_neg + false_neg > 0, true_neg / (true_neg + false_neg), np.nan)
    return ppv, npv


@dataclasses.dataclass(frozen=True)
class OperatingPoint:
    """One class against the rest at one threshold: the 2×2 counts, the four rates, and PPV and NPV moved by Bayes'
    rule to other prevalences (`at_prevalence`: one row per named prevalence)."""

    threshold: float
    tp: int
    fp: int
    fn: int
    tn: int
    sensitivity: float
    specificity: float
    ppv: float
    npv: float
    at_prevalence: pd.DataFrame

    @property
    def false_positive_rate(self) -> float:
        return 1 - self.specificity

    def counts(self) -> pd.DataFrame:
        """The 2×2 table as a notebook shows it: true class in rows, the answer in columns."""
        return pd.DataFrame([[self.tp, self.fn], [self.fp, self.tn]], index=["has it", "has not"],
                            columns=["called positive", "called negative"])

    @property
    def table(self) -> pd.DataFrame:
        """One row, indexed by the threshold: the four counts and the four rates, named as the fields."""
        names = ("tp", "fp", "fn", "tn", "sensitivity", "specificity", "ppv", "npv")
        return pd.DataFrame([{name: getattr(self, name) for name in names}],
                            index=pd.Index([self.threshold], name="threshold"))

    def describe(self) -> str:
        """The counts and rates in a sentence, then PPV and NPV at each other prevalence."""
        said = lambda value: "undefined" if np.isnan(value) else f"{value:.3f}"  # noqa: E731
        lines = [f"At threshold {self.threshold:.2f}: {self.tp} found, {self.fn} missed, {self.fp} false alarms, "
                 f"{self.tn} rightly not called; sensitivity {said(self.sensitivity)}, specificity "
                 f"{said(self.specificity)}, PPV {said(self.ppv)}, NPV {said(self.npv)}."]
        lines += [f"At a prevalence of {row.prevalence:.1%} ({where}): PPV {said(row.PPV)}, NPV {said(row.NPV)}."
                  for where, row in self.at_prevalence.iterrows()]
        return "\n".join(lines)


def operating_point(is_positive, scores, threshold: float, prevalences: dict | None = None) -> OperatingPoint:
    """Call an image positive when its score (the class's probability) is at least `threshold`, and measure it.

    `prevalences` (name → share of positives, e.g. {"dataset": 0.17, "a clinic": 0.05}) get PPV and NPV by Bayes'
    rule from this sensitivity and specificity (`predictive_values`), which carries the specificity over with the
    test set's mix of negatives (`specificity_at_mix` re-weights it); the test set's own prevalence is always a row.
    """
    is_positive, scores = np.asarray(is_positive, dtype=bool), np.asarray(scores, dtype=np.float64)
    if is_positive.shape != scores.shape or not is_positive.size:
        raise ValueError(f"need one score per image and at least one image; found {is_positive.shape} labels and "
                         f"{scores.shape} scores")
    called = scores >= threshold
    tn, fp, fn, tp = (int(n) for n in confusion_matrix(is_positive, called, labels=[False, True]).ravel())
    def share(part, whole):  # NaN where undefined: a class with no image, or nothing called positive
        return part / whole if whole else np.nan

    sensitivity, specificity = share(tp, tp + fn), share(tn, tn + fp)
    shares = {"test set": float(is_positive.mean()), **(prevalences or {})}
    ppv, npv = predictive_values(sensitivity, specificity, list(shares.values()))
    table = pd.DataFrame({"prevalence": list(shares.values()), "PPV": ppv, "NPV": npv}, index=list(shares))
    return OperatingPoint(float(threshold), tp, fp, fn, tn, sensitivity, specificity, share(tp, tp + fp),
                          share(tn, tn + fn), table)


def specificity_at_mix(matrix, positive: int, mix) -> float:
    """One-vs-rest specificity of class `positive` if its negatives came in `mix` (counts or shares per class, in
    the matrix's order; the positive class's own entry is ignored).

    `matrix` is a confusion matrix with the true classes as rows. Each other class's rate of not being called
    `positive` is weighted by that class's share among the negatives: at the matrix's own row totals this is the
    specificity counted from it. NaN if a class with a share in `mix` has no row in the matrix (no image).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    weights = np.asarray(mix, dtype=np.float64).copy()
    weights[positive] = 0.0
    images = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        kept = np.where(weights > 0, 1 - matrix[:, positive] / images, 0.0)  # left out of `positive`, per class
        return float((weights * kept).sum() / weights.sum())


@dataclasses.dataclass(frozen=True, eq=False)
class ClassMix:
    """Whose class mix a test set's PPV, NPV, majority baseline and ECE describe; `describe()` (and `str()`) says it
    in sentences.

    `table`: per class, images and share in the test set and in the whole dataset. `sampled`: the split was drawn
    from a sample of the dataset (the demo profile draws a fixed number per class from the real data). `keeps_mix`:
    every test class within one image of its dataset share, as a stratified split keeps it.
    """

    table: pd.DataFrame
    sampled: bool
    images_used: int
    images_in_dataset: int
    keeps_mix: bool
    test_balanced: bool
    dataset_balanced: bool
    largest_gap: float

    def describe(self) -> str:
        table = self.table
        shares = lambda column: ", ".join(f"{c} {v:.0%}" for c, v in table[column].items())  # noqa: E731
        drawn = (f"The split was drawn from a sample of the dataset ({self.images_used:,} of its "
                 f"{self.images_in_dataset:,} images of these classes)" if self.sampled else
                 f"The split uses all {self.images_in_dataset:,} images of these classes")
        balanced = " (class-balanced)" if self.test_balanced else ""
        lines = [f"{drawn}. Its test set{balanced}: {shares('test share')}.",
                 f"The dataset's own mix: {shares('dataset share')}"
                 + (" (balanced)." if self.dataset_balanced else "."),
                 f"Always answering the largest class scores {table['test share'].max():.1%} on this test set, "
                 f"{table['dataset share'].max():.1%} at the dataset's mix."]
        if self.keeps_mix:
            lines.append("The test set keeps the dataset's mix (to within one image per class): its PPV, NPV, "
                         "majority baseline and ECE hold at the dataset's class mix, which is still not a clinic's.")
        else:
            lines.append(f"The test set's shares differ from the dataset's by up to {100 * self.largest_gap:.0f} "
                         "percentage points: its PPV, NPV, majority baseline and ECE describe an artificial class "
                         "mix, not the dataset's.")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()


def class_mix(split: pd.DataFrame, index: pd.DataFrame, classes) -> ClassMix:
    """The class mix of the test part of `split` against the whole dataset's (`index`, a scan's)."""
    classes = list(classes)
    test = split.loc[split["split"] == "test", "label"].value_counts().reindex(classes, fill_value=0)
    whole = index.loc[index["label"].isin(classes), "label"].value_counts().reindex(classes, fill_value=0)
    table = pd.DataFrame({"test images": test, "test share": test / test.sum(),
                          "dataset images": whole, "dataset share": whole / whole.sum()})
    used = index.loc[index["label"].isin(classes), "relpath"].isin(split["relpath"])
    return ClassMix(table, sampled=not used.all(), images_used=int(used.sum()), images_in_dataset=int(len(used)),
                    keeps_mix=bool((test - table["dataset share"] * test.sum()).abs().max() <= 1),
                    test_balanced=bool(test.max() - test.min() <= 1),
                    dataset_balanced=bool(whole.max() - whole.min() <= 1),
                    largest_gap=float((table["test share"] - table["dataset share"]).abs().max()))


def group_only_rules(counts: pd.DataFrame) -> pd.DataFrame:
    """The best scores of a rule that sees only an image's group (e.g. child or adult), never the image.

    `counts`: classes as rows, groups as columns, images (or shares) in the cells. Rows of the result: always the
    largest class (the chance level), the most accurate rule (each group's largest class) and the most informed
    one (for each group, the class whose images it holds the largest share of); no rule, randomised or not, beats
    them. Informedness is balanced accuracy rescaled so that 1/K is 0 and 1 is 1 (scikit-learn's adjusted balanced
    accuracy). Why: a model can learn the group instead of the disease; this is what that shortcut alone buys.
    """
    counts = counts.astype(np.float64)
    of_class = counts.div(counts.sum(axis=1), axis=0)  # each class's images, split by group
    k = len(counts)
    rules = {"always the largest class": {g: counts.sum(axis=1).idxmax() for g in counts.columns},
             "most accurate": counts.idxmax(axis=0).to_dict(), "most informed": of_class.idxmax(axis=0).to_dict()}
    rows = {}
    for name, answer in rules.items():
        recall = pd.Series({c: sum(of_class.loc[c, g] for g in counts.columns if answer[g] == c) for c in counts.index})
        rows[name] = {**{f"{g} →": answer[g] for g in counts.columns},
                      "accuracy": sum(counts.loc[answer[g], g] for g in counts.columns) / counts.to_numpy().sum(),
                      "balanced accuracy": recall.mean(), "informedness": (recall.mean() - 1 / k) / (1 - 1 / k),
                      **{f"recall {c}": r for c, r in recall.items()}}
    return pd.DataFrame.from_dict(rows, orient="index")


# --------------------------------------------------------------------------- calibration


def reliability(y_true, probabilities, bins: int = 10) -> pd.DataFrame:
    """Per confidence bin: mean confidence, accuracy and count (the data of a reliability diagram)."""
    probabilities = np.asarray(probabilities)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        rows.append({"bin_low": edges[b], "bin_high": edges[b + 1], "count": int(inside.sum()),
                     "confidence": float(confidence[inside].mean()) if inside.any() else np.nan,
                     "accuracy": float(correct[inside].mean()) if inside.any() else np.nan})
    return pd.DataFrame(rows)


def expected_calibration_error(y_true, probabilities, bins: int = 10) -> float:
    """Average gap between confidence and accuracy, weighted by how many predictions fall in each bin."""
    table = reliability(y_true, probabilities, bins).dropna()
    return float((table["count"] * (table["confidence"] - table["accuracy"]).abs()).sum() / table["count"].sum())


def temperature_scale(probabilities, temperature: float) -> np.ndarray:
    """softmax(logits / T), computed from probabilities: log p differs from the logits by a constant."""
    logits = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(y_true, probabilities) -> float:
    """The temperature that minimises the negative log-likelihood (fit on validation, never on test)."""
    y_true = np.asarray(y_true)

    def nll(log_t):
        p = temperature_scale(probabilities, float(np.exp(log_t)))
        return -np.mean(np.log(np.clip(p[np.arange(len(y_true)), y_true], 1e-12, 1.0)))

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


# --------------------------------------------------------------------------- comparisons


def mcnemar(correct_a, correct_b) -> dict:
    """Exact McNemar test on paired per-image correctness: do the two models err on different images
    more often in one direction than chance allows?"""
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a, only_b = int(np.sum(correct_a & ~correct_b)), int(np.sum(~correct_a & correct_b))
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p_value": float(p)}


def most_confident_mistakes(predictions: pd.DataFrame, k: int = 8) -> pd.DataFrame:
    wrong = predictions[predictions["predicted"] != predictions["label"]]
    return wrong.sort_values("confidence", ascending=False).head(k).reset_index(drop=True)


# --------------------------------------------------------------------------- a run's evaluation


@dataclasses.dataclass(frozen=True, eq=False)
class Evaluation:
    """A run's metrics on its test split, as notebook 04 shows them; `str()` is the report that
    `python -m helpers evaluate` prints, `as_dict()` what metrics.json holds.

    `per_class`: one row per class (support, sensitivity, specificity, ppv, npv, roc_auc, pr_auc; NaN where this
    test set leaves a value undefined). `intervals`: the percentile bootstrap's 95% interval (columns low, high) of
    accuracy, macro-F1 and each class's sensitivity. `temperature` is fitted on validation (None without one);
    `ece_after_scaling` is the ECE once the test probabilities are scaled by it. `unreadable_files`: path → reason
    for each image left out, which is why `n` can be smaller than the split's test part.
    """

    run: str
    recipe: str
    classes: list
    n: int
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    per_class: pd.DataFrame
    confusion_matrix: pd.DataFrame
    intervals: pd.DataFrame
    temperature: float | None
    ece: float
    ece_after_scaling: float | None
    majority_baseline: float
    pretrained: bool
    weights_used: str
    unreadable_files: dict
    saved: dict = dataclasses.field(repr=False)

    @classmethod
    def from_dict(cls, metrics: dict) -> Evaluation:
        """From metrics.json's layout (that of `as_dict`); older files without `unreadable_files` load too."""
        classes, ci = list(metrics["classes"]), metrics["ci95"]
        rows = {"accuracy": ci["accuracy"], "macro-F1": ci["macro_f1"],
                **{f"sensitivity {c}": ci["sensitivity"][c] for c in classes}}
        intervals = pd.DataFrame([v or [np.nan, np.nan] for v in rows.values()], index=list(rows),
                                 columns=["low", "high"], dtype=float)
        per_class = pd.DataFrame.from_dict(metrics["per_class"], orient="index").loc[classes]
        per_class = per_class.astype({c: int if c == "support" else float for c in per_class.columns})
        calibration = metrics["calibration"]
        return cls(run=metrics["run"], recipe=metrics["recipe"], classes=classes, n=metrics["n"],
                   accuracy=metrics["accuracy"], balanced_accuracy=metrics["balanced_accuracy"],
                   macro_f1=metrics["macro_f1"], per_class=per_class,
                   confusion_matrix=pd.DataFrame(metrics["confusion_matrix"], index=pd.Index(classes, name="true"),
                                                 columns=pd.Index(classes, name="predicted")),
                   intervals=intervals, temperature=calibration["temperature"], ece=calibration["ece_before"],
                   ece_after_scaling=calibration["ece_after_temperature_scaling"],
                   majority_baseline=metrics["majority_baseline"], pretrained=metrics["pretrained"],
                   weights_used=metrics["weights_used"], unreadable_files=metrics.get("unreadable_files") or {},
                   saved=metrics)

    def as_dict(self) -> dict:
        return self.saved

    @property
    def calibration(self) -> pd.Series:
        """Temperature and ECE before and after scaling by it: one column of a side-by-side table."""
        return pd.Series({"temperature": self.temperature, "ece": self.ece,
                          "ece_after_scaling": self.ece_after_scaling})  # as the fields are named

    @property
    def table(self) -> pd.DataFrame:
        """The per-class table (`per_class`)."""
        return self.per_class

    def describe(self) -> str:
        """The report that `python -m helpers evaluate` prints (also `str()`)."""
        return _report(self.saved)

    def __str__(self) -> str:
        return self.describe()


def evaluate_run(run, n_resamples: int = 1000, seed: int = 0, figures: bool = True, progress: bool = True,
                 again: bool = False) -> Evaluation:
    """A run's metrics on its test split, computed once and saved with the test predictions (and figures) in its
    folder; later calls read them back, unless `again` or the saved ones cannot stand for a new computation (other
    resamples or seed, a model newer than them, an unreadable layout): then computed again, with a line saying why.

    Test and validation images that can no longer be read are left out (named as they are) and recorded in
    `unreadable_files` (path → reason): `n` counts the test images actually scored.
    """
    run = as_run(run)
    if not again:
        saved, why = _saved_evaluation(run, n_resamples, seed)
        if saved is not None:
            return saved
        if why:
            print(f"{why}: computing it again")
    verbose = "auto" if progress else 0
    test = run.predict_part("test", verbose=verbose)
    metrics, scaled = _metrics(run, test, n_resamples, seed, verbose)
    run.save_evaluation(metrics, test.drop(columns=["path"]))
    if figures:
        _save_figures(run, test, metrics, scaled)
    return Evaluation.from_dict(metrics)


def _saved_evaluation(run, n_resamples: int, seed: int) -> tuple[Evaluation | None, str | None]:
    """(the saved evaluation, None) if it can be reused, else (None, why not; None if there is none)."""
    saved = run.saved_metrics()
    if saved is None:
        return None, None
    where = f"The saved metrics of {run.folder}"
    try:
        evaluation = Evaluation.from_dict(saved)
        asked = (saved["ci95"]["resamples"], saved["ci95"]["seed"])
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"{where} are of an older layout ({type(exc).__name__}: {exc})"
    if asked != (n_resamples, seed):
        return None, (f"{where} used {asked[0]} resamples with seed {asked[1]}, not {n_resamples} with seed "
                      f"{seed}")
    if run.metrics_predate_model():
        return None, f"{where} are older than its model"
    return evaluation, None


def _metrics(run, test: pd.DataFrame, n_resamples: int, seed: int, verbose) -> tuple[dict, np.ndarray | None]:
    """metrics.json's content, and the test probabilities scaled by the fitted temperature (None without one)."""
    classes = run.classes
    left_out = unreadable_files(run.part("test")["path"])
    p_test = test[classes].to_numpy()
    metrics = classification_metrics(test["y_true"], p_test, classes)
    try:  # the temperature is fitted on validation images; Paper B's protocol has none
        val = run.predict_part("val", verbose=verbose)
        left_out.update(unreadable_files(run.part("val")["path"]))
        temperature = fit_temperature(val["y_true"], val[classes].to_numpy())
    except ValueError:
        temperature = None
    scaled = temperature_scale(p_test, temperature) if temperature else None
    ece = expected_calibration_error(test["y_true"], p_test)
    metrics.update({
        "run": str(run.folder), "recipe": run.name, "classes": classes,
        "pretrained": run.pretrained, "weights_used": run.weights_used,
        "ci95": bootstrap_ci(test["y_true"], p_test, classes, n_resamples=n_resamples, seed=seed),
        "ece": ece,
        "calibration": {"temperature": temperature,
                        "ece_before": ece,
                        "ece_after_temperature_scaling":
                            expected_calibration_error(test["y_true"], scaled) if temperature else None},
        "majority_baseline": float(np.bincount(test["y_true"], minlength=len(classes)).max() / len(test)),
        "unreadable_files": left_out,
    })
    return metrics, scaled


def _save_figures(run, test: pd.DataFrame, metrics: dict, scaled) -> None:
    p_test, temperature = test[run.classes].to_numpy(), metrics["calibration"]["temperature"]
    curves = {"as trained": reliability(test["y_true"], p_test)}
    if scaled is not None:
        curves[f"temperature {temperature:.2f}"] = reliability(test["y_true"], scaled)
    _draw_and_save(run, test, metrics, curves)


def _draw_and_save(run, test, metrics, curves) -> None:
    classes, p_test = run.classes, test[run.classes].to_numpy()
    caption = plots.caption(None, run)  # the run's own figures: its test images, its model
    for name, figure in (
        ("confusion_matrix", plots.confusion_matrices(np.array(metrics["confusion_matrix"]), classes,
                                                      caption=caption)),
        ("roc_pr_curves", plots.roc_pr_curves(test["y_true"], p_test, classes, caption=caption)),
        ("reliability", plots.reliability_diagram(curves, caption=caption)),
        ("confident_mistakes", plots.mistakes_gallery(most_confident_mistakes(test), caption=caption)),
    ):
        with files.atomic_path(run.folder / f"{name}.png") as tmp:
            figure.savefig(tmp, dpi=110, bbox_inches="tight")
        plt.close(figure)


def _calibration_line(calibration: dict) -> str:
    line = f"ECE               {calibration['ece_before']:.3f}"
    if calibration["temperature"] is None:
        return line + " (no validation split to fit a temperature on)"
    return line + (f" → {calibration['ece_after_temperature_scaling']:.3f} after temperature scaling "
                   f"(T = {calibration['temperature']:.2f}, fitted on validation)")


def _report(metrics: dict) -> str:
    """The text report of `python -m helpers evaluate`, from metrics.json's layout."""
    ci = metrics["ci95"]
    lines = [f"Run {metrics['run']} ({metrics['recipe']}), {metrics['n']} test images"]
    if not metrics["pretrained"]:
        lines.append("!! backbone was RANDOMLY INITIALISED (not pretrained): not transfer learning")
    if metrics.get("unreadable_files"):  # older metrics.json files have no such record
        lines.append(f"!! left out {len(metrics['unreadable_files'])} image(s) that could not be read "
                     "(listed in metrics.json unreadable_files)")
    lines += [
        f"accuracy          {metrics['accuracy']:.3f}  95% CI {ci['accuracy'][0]:.3f}–{ci['accuracy'][1]:.3f}"
        f"   (majority baseline {metrics['majority_baseline']:.3f})",
        f"balanced accuracy {metrics['balanced_accuracy']:.3f}",
        f"macro-F1          {metrics['macro_f1']:.3f}  95% CI {ci['macro_f1'][0]:.3f}–{ci['macro_f1'][1]:.3f}",
        _calibration_line(metrics["calibration"]),
        "",
        f"{'class':<17}{'n':>5}{'sens':>8}{'spec':>8}{'PPV':>8}{'NPV':>8}{'ROC-AUC':>9}{'PR-AUC':>8}",
    ]
    fmt = lambda v: f"{v:>8.3f}" if v is not None else f"{'–':>8}"  # noqa: E731
    for cls, m in metrics["per_class"].items():
        lines.append(f"{cls:<17}{m['support']:>5}" + "".join(
            fmt(m[key]) for key in ("sensitivity", "specificity", "ppv", "npv")) + " " + fmt(m["roc_auc"])
            + fmt(m["pr_auc"]))
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True, eq=False)
class Comparison:
    """Two runs on the same test images: their metrics side by side (`table`, one column per run), and McNemar's
    test on the images where exactly one of them is right."""

    table: pd.DataFrame
    a: str
    b: str
    only_a_correct: int
    only_b_correct: int
    p_value: float

    def describe(self) -> str:
        """Each run's accuracy and macro-F1, then McNemar's test in a sentence."""
        runs = "; ".join(f"{name}: accuracy {self.table.loc['accuracy', name]:.3f}, macro-F1 "
                         f"{self.table.loc['macro-F1', name]:.3f}" for name in (self.a, self.b))
        said = ("below 0.05: they differ by more than chance" if self.p_value < 0.05 else
                "not below 0.05: these images do not show that they differ")
        return (f"{runs}.\nOn the test images where exactly one run is right, {self.a} alone is right on "
                f"{self.only_a_correct} and {self.b} alone on {self.only_b_correct}: McNemar's exact p = "
                f"{self.p_value:.3g} ({said}).")


def compare_on_test(run_a, run_b) -> Comparison:
    """Two runs side by side on the same test images (each evaluated first if it never was), and McNemar's test on
    their per-image correctness."""
    evaluations, predictions = {}, {}
    for label, run in zip(run_labels([run_a, run_b]), (run_a, run_b)):  # two runs of one recipe stay two
        evaluations[label] = evaluate_run(run)
        predictions[label] = as_run(run).test_predictions()
    (name_a, pa), (name_b, pb) = predictions.items()
    if set(pa.index) != set(pb.index):
        raise ValueError(f"{run_a} and {run_b} were tested on different images: a paired comparison needs the "
                         "same test split (train both on the same dataset, task and seed)")
    pb = pb.loc[pa.index]
    paired = mcnemar(pa["predicted"] == pa["label"], pb["predicted"] == pb["label"])
    table = pd.DataFrame({name: _side_by_side(e) for name, e in evaluations.items()})
    return Comparison(table, name_a, name_b, **paired)


def _side_by_side(e: Evaluation) -> dict:
    row = {"backbone": e.weights_used + ("" if e.pretrained else " (random init)"),
           "accuracy": e.accuracy, "accuracy 95% CI": e.intervals.loc["accuracy"].tolist(),
           "balanced accuracy": e.balanced_accuracy, "macro-F1": e.macro_f1, "ECE": e.ece}
    for cls, sensitivity in e.per_class["sensitivity"].items():
        row[f"sensitivity {cls}"] = None if np.isnan(sensitivity) else float(sensitivity)
    return row


# --------------------------------------------------------------------------- Paper A's Figure 2, re-read

# Paper A's confusion matrix (its Figure 2), as the paper's text (section 5) gives it (S. Sun, "Pretrained-ResNet-
# based COVID-19 CT image classification", Theoretical and Natural Science 62, 190-196, 2024,
# doi:10.54254/2753-8818/62/20241534), row by row, classes in this order. Its column totals are exactly 20% of each
# class of the dataset (the validation labels), so the columns hold the true classes and the rows the predictions.
_FIGURE_2_CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
PAPER_A_FIGURE_2 = pd.DataFrame([[102, 174, 288, 49], [201, 321, 576, 63], [376, 631, 1049, 140], [44, 76, 125, 17]],
                                index=pd.Index(_FIGURE_2_CLASSES, name="predicted"),
                                columns=pd.Index(_FIGURE_2_CLASSES, name="true"))


@dataclasses.dataclass(frozen=True, eq=False)
class Independence:
    """What a confusion matrix says beyond its diagonal (see `independence_check`)."""

    images: int
    correct: int
    accuracy: float
    accuracy_if_independent: float
    kappa: float
    chi2: float
    dof: int
    p_value: float
    row_totals: list
    column_totals: list
    expected_if_independent: pd.DataFrame  # in the matrix's layout and labels

    @property
    def table(self) -> pd.DataFrame:
        """One row: the images, the correct ones, accuracy beside the independent level, kappa and the chi-square
        test (the expected counts are `expected_if_independent`)."""
        return pd.DataFrame([{"images": self.images, "correct": self.correct, "accuracy": self.accuracy,
                              "accuracy if independent": self.accuracy_if_independent, "kappa": self.kappa,
                              "chi2": self.chi2, "dof": self.dof, "p value": self.p_value}])

    def describe(self) -> str:
        said = ("a small p: predictions depend on the labels" if self.p_value < 0.05 else
                "a large p: nothing shows that predictions depend on the labels")
        return (f"Accuracy {self.accuracy:.1%} ({self.correct:,} of {self.images:,} images); predictions independent "
                f"of the labels would score {self.accuracy_if_independent:.1%} with the same totals; kappa "
                f"{self.kappa:.3f}.\nChi-square test of independence: {self.chi2:.1f} on {self.dof} degrees of "
                f"freedom, p = {self.p_value:.3g} ({said}).")


def independence_check(matrix, classes=None) -> Independence:
    """What a confusion matrix says beyond its diagonal: accuracy, the accuracy that predictions independent of
    the labels would get with the same totals, Cohen's kappa (0: no better than that), and the chi-square test of
    independence (a large p: nothing shows that predictions depend on labels), with the counts it expects, labelled
    as the matrix (a DataFrame) or by `classes` on both axes.

    A class that was never predicted (or has no image) adds nothing to the test: its empty row or column is left out.
    """
    labels = (matrix.index, matrix.columns) if isinstance(matrix, pd.DataFrame) else (classes, classes)
    matrix = np.asarray(matrix)
    n = int(matrix.sum())
    rows, columns = matrix.sum(axis=1), matrix.sum(axis=0)
    used = matrix[rows > 0][:, columns > 0]
    if min(used.shape) >= 2:
        test = chi2_contingency(used)
        chi2, dof, p_value = float(test.statistic), int(test.dof), float(test.pvalue)
    else:  # everything in one row or column: no evidence of dependence either way
        chi2, dof, p_value = 0.0, 0, 1.0
    first, second = np.indices(matrix.shape)
    counts = matrix.ravel()
    with warnings.catch_warnings():  # one class only: kappa is undefined (NaN)
        warnings.simplefilter("ignore")
        kappa = cohen_kappa_score(np.repeat(first.ravel(), counts), np.repeat(second.ravel(), counts))
    expected = pd.DataFrame(np.outer(rows, columns) / n, index=labels[0], columns=labels[1])
    return Independence(images=n, correct=int(np.trace(matrix)), accuracy=float(np.trace(matrix) / n),
                        accuracy_if_independent=float((rows * columns).sum() / n**2), kappa=float(kappa),
                        chi2=chi2, dof=dof, p_value=p_value, row_totals=rows.tolist(),
                        column_totals=columns.tolist(), expected_if_independent=expected)
