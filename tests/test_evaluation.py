"""Evaluation: metrics on hand-checked examples, deterministic bootstrap, calibration, McNemar, the CLI."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from helpers import evaluation, runs
from helpers.cli import main

CLASSES3 = ["A", "B", "C"]


def one_hot_probabilities(predicted, k=3, confidence=0.8):
    p = np.full((len(predicted), k), (1 - confidence) / (k - 1))
    p[np.arange(len(predicted)), predicted] = confidence
    return p


def test_per_class_metrics_match_a_hand_count():
    y_true = [0, 0, 0, 1, 1, 2, 2, 2]
    y_pred = [0, 0, 1, 1, 2, 2, 2, 0]
    m = evaluation.classification_metrics(y_true, one_hot_probabilities(y_pred), CLASSES3)
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
    a = m["per_class"]["A"]  # TP 2, FN 1, FP 1, TN 4
    assert (a["sensitivity"], a["specificity"], a["ppv"], a["npv"]) == pytest.approx((2 / 3, 4 / 5, 2 / 3, 4 / 5))
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    f1 = [2 / 3, 1 / 2, 2 / 3]  # per class: 2·P·R/(P+R)
    assert m["macro_f1"] == pytest.approx(np.mean(f1))


def test_a_class_without_positives_in_the_test_set_does_not_crash():
    y_true = [0, 0, 1, 1]
    m = evaluation.classification_metrics(y_true, one_hot_probabilities([0, 2, 1, 1]), CLASSES3)
    c = m["per_class"]["C"]
    assert c["support"] == 0 and c["sensitivity"] is None and c["roc_auc"] is None and c["pr_auc"] is None
    assert c["specificity"] == pytest.approx(3 / 4)
    ci = evaluation.bootstrap_ci(y_true, one_hot_probabilities([0, 2, 1, 1]), CLASSES3, n_resamples=50)
    assert ci["sensitivity"]["C"] is None


def test_bootstrap_is_deterministic_under_a_seed():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 200)
    probabilities = rng.dirichlet(np.ones(3), 200)
    a = evaluation.bootstrap_ci(y_true, probabilities, CLASSES3, n_resamples=300, seed=7)
    b = evaluation.bootstrap_ci(y_true, probabilities, CLASSES3, n_resamples=300, seed=7)
    c = evaluation.bootstrap_ci(y_true, probabilities, CLASSES3, n_resamples=300, seed=8)
    assert a == b and a != c
    point = evaluation.classification_metrics(y_true, probabilities, CLASSES3)["accuracy"]
    assert a["accuracy"][0] <= point <= a["accuracy"][1]


def test_calibration_error_and_temperature_scaling():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 3, 3000)
    predicted = np.where(rng.uniform(size=3000) < 0.6, y_true, (y_true + 1) % 3)  # 60% correct
    overconfident = one_hot_probabilities(predicted, confidence=0.98)
    before = evaluation.expected_calibration_error(y_true, overconfident)
    assert before == pytest.approx(0.98 - 0.6, abs=0.03)
    temperature = evaluation.fit_temperature(y_true, overconfident)
    assert temperature > 1, "an overconfident model is softened"
    after = evaluation.expected_calibration_error(y_true, evaluation.temperature_scale(overconfident, temperature))
    assert after < 0.05
    np.testing.assert_allclose(evaluation.temperature_scale(overconfident, 1.0), overconfident, rtol=1e-9)


def test_mcnemar_exact_test():
    a = np.array([True] * 10 + [False] * 5 + [True] * 20)
    b = np.array([False] * 10 + [False] * 5 + [True] * 20)
    result = evaluation.mcnemar(a, b)
    assert (result["only_a_correct"], result["only_b_correct"]) == (10, 0)
    assert result["p_value"] == pytest.approx(2 * 0.5**10)
    assert evaluation.mcnemar(a, a)["p_value"] == 1.0


def test_predictive_values_by_hand_and_from_a_confusion_matrix():
    ppv, npv = evaluation.predictive_values(0.9, 0.8, [0.1, 0.5])
    # at 10%: 0.09 true positives against 0.18 false ones; 0.72 true negatives against 0.01 false ones
    np.testing.assert_allclose(ppv, [0.09 / 0.27, 0.45 / 0.55])
    np.testing.assert_allclose(npv, [0.72 / 0.73, 0.4 / 0.45])
    tp, fn, fp, tn = 30, 10, 45, 115  # at the test set's own prevalence Bayes' rule gives the counts' ratios
    ppv, npv = evaluation.predictive_values(tp / (tp + fn), tn / (tn + fp), (tp + fn) / (tp + fn + fp + tn))
    assert (float(ppv), float(npv)) == pytest.approx((tp / (tp + fp), tn / (tn + fn)))
    ppv, npv = evaluation.predictive_values(0.0, 1.0, [0.0, 0.3])  # never positive: PPV undefined
    assert np.isnan(ppv).all() and npv[0] == 1.0


def test_specificity_depends_on_the_mix_of_the_negatives():
    matrix = np.array([[8, 2, 0], [1, 9, 0], [8, 0, 12]])  # rows true: B rarely called A, C often
    counted = 1 - (1 + 8) / (10 + 20)  # the test set's own negatives: 21 of 30 left out of A
    assert evaluation.specificity_at_mix(matrix, 0, matrix.sum(axis=1)) == pytest.approx(counted)
    assert evaluation.specificity_at_mix(matrix, 0, [0.5, 0.4, 0.1]) == pytest.approx(0.8 * 0.9 + 0.2 * 0.6)
    assert evaluation.specificity_at_mix(matrix, 0, [0, 0, 1]) == pytest.approx(0.6)  # only C among negatives
    assert np.isnan(evaluation.specificity_at_mix([[3, 0, 0], [0, 2, 0], [0, 0, 0]], 0, [1, 1, 1]))  # C: no image


def test_class_mix_says_when_the_test_set_is_a_balanced_sample():
    index = pd.DataFrame({"relpath": [f"{c}-{i}" for c, n in (("A", 60), ("B", 20)) for i in range(n)],
                          "label": ["A"] * 60 + ["B"] * 20})
    sample = index.groupby("label").head(20).assign(split="train")
    sample.loc[sample.groupby("label").head(5).index, "split"] = "test"
    mix = evaluation.class_mix(sample, index, ["A", "B"])
    assert mix.table["test share"].tolist() == [0.5, 0.5] and mix.table["dataset share"].tolist() == [0.75, 0.25]
    assert mix.sampled and mix.test_balanced and not mix.dataset_balanced
    assert mix.largest_gap == pytest.approx(0.25) and not mix.keeps_mix
    assert "artificial class mix" in str(mix) and "(40 of its 80 images of these classes)" in str(mix)
    whole = index.assign(split=["test" if i % 4 == 0 else "train" for i in range(80)])
    kept = evaluation.class_mix(whole, index, ["A", "B"])
    assert not kept.sampled and kept.largest_gap == pytest.approx(0.0) and kept.keeps_mix
    assert "keeps the dataset's mix" in str(kept) and "uses all 80 images" in str(kept)
    small = index.groupby("label").head(12).assign(split="train")  # 12 + 12, a test set of 3 + 2: rounding only
    small.loc[small.index[[0, 1, 2, 12, 13]], "split"] = "test"
    rounded = evaluation.class_mix(small, small, ["A", "B"])
    assert rounded.keeps_mix and rounded.largest_gap == pytest.approx(0.1)


AGES = pd.DataFrame({"children": [0, 1341, 1345], "adults": [3616, 8851, 0]},
                    index=["COVID", "Normal", "Viral Pneumonia"])  # the published counts, 3 classes


def test_an_age_only_rule_on_a_balanced_three_class_sample_by_hand():
    balanced = AGES.div(AGES.sum(axis=1), axis=0)
    rules = evaluation.group_only_rules(balanced)
    best = rules.loc["most accurate"]
    assert (best["children →"], best["adults →"]) == ("Viral Pneumonia", "COVID")
    assert best["accuracy"] == pytest.approx(2 / 3) and best["informedness"] == pytest.approx(0.5)
    assert (best["recall COVID"], best["recall Normal"], best["recall Viral Pneumonia"]) == (1, 0, 1)
    chance = rules.loc["always the largest class"]
    assert chance["accuracy"] == pytest.approx(1 / 3) and chance["informedness"] == pytest.approx(0)
    full = evaluation.group_only_rules(AGES).loc["most accurate", "accuracy"]
    assert full == pytest.approx((1345 + 8851) / 15153)


def test_no_group_only_rule_beats_the_ones_found():
    rng = np.random.default_rng(3)
    for _ in range(20):
        counts = pd.DataFrame(rng.integers(0, 50, (4, 3)) + [1, 0, 0], index=list("ABCD"))
        rules = evaluation.group_only_rules(counts)
        every = [dict(zip(counts.columns, answer)) for answer in itertools.product(counts.index, repeat=3)]
        y_true = np.repeat(np.repeat(counts.index.to_numpy(), 3), counts.to_numpy().ravel())
        group = np.repeat(np.tile(counts.columns.to_numpy(), 4), counts.to_numpy().ravel())
        scores = [(accuracy_score(y_true, [a[g] for g in group]),
                   balanced_accuracy_score(y_true, [a[g] for g in group], adjusted=True)) for a in every]
        assert rules.loc["most accurate", "accuracy"] == pytest.approx(max(s[0] for s in scores))
        assert rules.loc["most informed", "informedness"] == pytest.approx(max(s[1] for s in scores))


def test_evaluate_cli_writes_metrics_and_figures(resumed_run, capsys):
    run = resumed_run[0]
    assert main(["evaluate", "--run", str(run), "--json", "--resamples", "100"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((run / "metrics.json").read_text())
    assert printed == saved
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "per_class", "confusion_matrix", "ci95", "ece"):
        assert key in saved
    assert set(saved["per_class"]["COVID"]) >= {"sensitivity", "specificity", "ppv", "npv", "roc_auc"}
    assert saved["pretrained"] is False and saved["weights_used"] == "none"
    split = pd.read_csv(run / "split.csv")
    assert np.sum(saved["confusion_matrix"]) == saved["n"] == (split["split"] == "test").sum()
    for figure in ("confusion_matrix", "roc_pr_curves", "reliability", "confident_mistakes"):
        assert (run / f"{figure}.png").stat().st_size > 1000
    assert main(["evaluate", "--run", str(run), "--resamples", "100", "--no-figures"]) == 0
    assert "RANDOMLY INITIALISED" in capsys.readouterr().out


def test_paper_a_figure_2_is_what_predictions_independent_of_the_labels_look_like():
    """Paper A's own confusion matrix: 35.2% right, kappa about 0, chi-square p about 0.8, and column totals that
    are exactly 20% of each class of the dataset (the validation labels)."""
    figure_2 = evaluation.PAPER_A_FIGURE_2
    classes = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
    assert (figure_2.index.name, figure_2.columns.name) == ("predicted", "true")
    assert list(figure_2.index) == list(figure_2.columns) == classes
    assert figure_2.loc["Normal", "COVID"] == 376, "row: predicted, column: true (the paper's row 3, column 1)"
    matrix = figure_2.to_numpy()
    assert matrix.sum() == 4232 and np.trace(matrix) == 1489
    check = evaluation.independence_check(figure_2)
    assert check.accuracy == pytest.approx(1489 / 4232) and round(check.accuracy, 3) == 0.352
    assert check.accuracy_if_independent == pytest.approx(0.3565, abs=5e-4)
    assert abs(check.kappa) < 0.01 and check.kappa == pytest.approx(-0.0072, abs=5e-4)
    assert check.dof == 9 and check.chi2 == pytest.approx(5.41, abs=0.01)
    assert check.p_value == pytest.approx(0.797, abs=0.001)
    dataset = np.array([3616, 6012, 10192, 1345])  # COVID, Lung_Opacity, Normal, Viral Pneumonia
    assert check.column_totals == [723, 1202, 2038, 269] == list(np.floor(dataset * 0.2).astype(int))
    expected = check.expected_if_independent
    assert expected.index.equals(figure_2.index) and expected.columns.equals(figure_2.columns), "labelled as given"
    assert expected.loc["Normal", "COVID"] == pytest.approx(2196 * 723 / 4232)
    assert expected.to_numpy().sum() == pytest.approx(4232) and np.abs(expected - figure_2).to_numpy().max() < 18


def test_a_model_that_learned_something_is_far_from_independent():
    matrix = np.array([[90, 5, 5], [10, 80, 10], [5, 5, 90]])
    check = evaluation.independence_check(matrix, classes=CLASSES3)
    assert check.kappa > 0.7 and check.p_value < 1e-6
    assert list(check.expected_if_independent.index) == list(check.expected_if_independent.columns) == CLASSES3


def test_a_class_never_predicted_leaves_the_independence_test_well_defined():
    matrix = np.array([[5, 0, 3], [2, 0, 6], [1, 0, 4]])  # nobody was called the middle class
    check = evaluation.independence_check(matrix)
    assert check.dof == 2 and 0 <= check.p_value <= 1
    assert check.expected_if_independent[1].sum() == 0
    single = evaluation.independence_check(np.array([[4, 0], [3, 0]]))
    assert (single.dof, single.p_value) == (0, 1.0)


def test_the_bootstrap_gives_scipys_percentile_interval_for_the_same_seed():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 3, 150)
    probabilities = one_hot_probabilities(np.where(rng.uniform(size=150) < 0.7, y_true, (y_true + 1) % 3))
    ours = evaluation.bootstrap_ci(y_true, probabilities, CLASSES3, n_resamples=500, seed=11)["accuracy"]
    theirs = bootstrap((y_true, probabilities.argmax(axis=1)), lambda a, b: np.mean(a == b), paired=True,
                       vectorized=False, n_resamples=500, method="percentile",
                       random_state=np.random.default_rng(11)).confidence_interval
    np.testing.assert_allclose(ours, [theirs.low, theirs.high])


def test_the_corrected_resampled_t_interval_is_nadeau_and_bengios_by_hand():
    from scipy import stats

    scores, n_train, n_test = [0.80, 0.90, 0.85, 0.95], 162, 18
    found = runs.corrected_resampled_t_interval(scores, n_train, n_test, level=0.90)
    mean, sd, q = np.mean(scores), np.std(scores, ddof=1), stats.t.ppf(0.95, df=3)
    assert found.mean == pytest.approx(0.875) and found.repeats == 4 and found.level == 0.90
    np.testing.assert_allclose(found.plain, [mean - q * sd / 2, mean + q * sd / 2])
    corrected_half = q * sd * np.sqrt(1 / 4 + 18 / 162)
    np.testing.assert_allclose(found.corrected, [mean - corrected_half, mean + corrected_half])
    widening = np.sqrt((1 / 4 + 18 / 162) / (1 / 4))
    assert found.widening == pytest.approx(widening)
    width = {name: getattr(found, name)[1] - getattr(found, name)[0] for name in ("plain", "corrected")}
    assert width["corrected"] / width["plain"] == pytest.approx(widening)
    table = pd.DataFrame({"balanced accuracy, last epoch": scores})
    cross_validation = runs.CrossValidation(runs=[], table=table, n_train=n_train, n_test=n_test)
    assert cross_validation.interval(0.90) == found, "a cross-validation's interval: its scores, its sizes"


@pytest.mark.parametrize("scores, n_train, n_test, level, message", [
    ([0.9], 162, 18, 0.95, "need at least 2 finite scores"),
    ([0.9, float("nan")], 162, 18, 0.95, "need at least 2 finite scores"),
    ([0.9, 0.8], 0, 18, 0.95, "n_train must be a positive whole number of images; found 0"),
    ([0.9, 0.8], 162, 1.5, 0.95, "n_test must be a positive whole number"),
    ([0.9, 0.8], 162, 18, 95, "level must lie between 0 and 1"),
])
def test_the_corrected_resampled_t_interval_refuses_bad_input(scores, n_train, n_test, level, message):
    with pytest.raises(ValueError, match=message):
        runs.corrected_resampled_t_interval(scores, n_train, n_test, level)


def test_a_test_image_that_went_bad_after_training_is_named_by_evaluation_and_recorded(tmp_path, capsys):
    import os

    run = _tiny_evaluable_run(tmp_path / "run")
    bad = run.folder / "Normal/images/Normal-1.png"
    stat = bad.stat()
    bad.write_bytes(bad.read_bytes()[:40])  # cut short, its time put back: nothing but reading it tells
    os.utime(bad, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    metrics = evaluation.evaluate_run(run, n_resamples=10, figures=False, progress=False)
    said = capsys.readouterr().err
    assert f"Left out 1 test image(s) that could not be read: {bad} (" in said
    assert metrics.n == 7 and list(metrics.unreadable_files) == [str(bad)]
    assert json.loads((run.folder / "metrics.json").read_text())["unreadable_files"] == metrics.unreadable_files
    assert "left out 1 image(s) that could not be read" in str(metrics)


def test_two_runs_of_one_recipe_are_compared_as_two(phantom_root, tmp_path, monkeypatch):
    """Issue 25: comparisons were keyed by recipe name, so two repeats (or seeds) of one recipe collapsed into one."""
    from helpers import config, runs
    from tests.conftest import TOY_PAPER_A, train_tiny

    monkeypatch.setattr(config, "OUTPUT_DIR", tmp_path / "outputs")
    for seed in (0, 1):
        train_tiny(tmp_path / f"seed{seed}", phantom_root, TOY_PAPER_A, epochs=1, seed=seed)
        evaluation.evaluate_run(runs.Run(tmp_path / f"seed{seed}"), n_resamples=20, figures=False, progress=False)
    pair = [tmp_path / "seed0", tmp_path / "seed1"]
    assert runs.run_labels(pair) == ["paper_a_toy (seed0)", "paper_a_toy (seed1)"]
    comparison = evaluation.compare_on_test(*pair)
    assert list(comparison.table.columns) == runs.run_labels(pair)
    assert (comparison.a, comparison.b) == tuple(runs.run_labels(pair))
    assert list(runs.compare_runs(pair).columns) == runs.run_labels(pair)
    assert runs.run_labels(pair[:1]) == ["paper_a_toy"], "a recipe alone keeps its plain name"


# metrics.json as the code before issue 25 wrote it (two classes; Normal never predicted: its PPV is undefined)
SAVED_BEFORE_ISSUE_25 = {
    "n": 10, "accuracy": 0.6, "balanced_accuracy": 0.5, "macro_f1": 0.375,
    "per_class": {
        "COVID": {"support": 6, "sensitivity": 1.0, "specificity": 0.0, "ppv": 0.6, "npv": None, "roc_auc": 0.75,
                  "pr_auc": 0.8},
        "Normal": {"support": 4, "sensitivity": 0.0, "specificity": 1.0, "ppv": None, "npv": 0.6, "roc_auc": 0.75,
                   "pr_auc": 0.5}},
    "confusion_matrix": [[6, 0], [4, 0]], "run": "outputs/runs/x", "recipe": "paper_a", "classes": ["COVID", "Normal"],
    "pretrained": False, "weights_used": "none",
    "ci95": {"level": 0.95, "resamples": 1000, "seed": 0, "accuracy": [0.3, 0.9], "macro_f1": [0.2, 0.45],
             "sensitivity": {"COVID": [1.0, 1.0], "Normal": None}},
    "ece": 0.25, "calibration": {"temperature": 1.5, "ece_before": 0.25, "ece_after_temperature_scaling": 0.125},
    "majority_baseline": 0.6,
}


def test_an_evaluation_saved_before_issue_25_loads_as_the_notebook_shows_it():
    """Issue 25: fields and tables, not `metrics["ci95"]["sensitivity"]`; a metrics.json without `unreadable_files`
    (older still) loads too, and the report is the one `python -m helpers evaluate` printed."""
    e = evaluation.Evaluation.from_dict(SAVED_BEFORE_ISSUE_25)
    assert (e.n, e.accuracy, e.temperature, e.ece, e.ece_after_scaling) == (10, 0.6, 1.5, 0.25, 0.125)
    assert e.unreadable_files == {} and e.as_dict() == SAVED_BEFORE_ISSUE_25
    assert list(e.per_class.index) == ["COVID", "Normal"] and e.per_class.loc["COVID", "support"] == 6
    assert np.isnan(e.per_class.loc["Normal", "ppv"]) and e.per_class.loc["COVID", "ppv"] == 0.6
    assert e.per_class["support"].dtype == int and e.per_class["npv"].dtype == float
    assert list(e.intervals.columns) == ["low", "high"]
    assert list(e.intervals.index) == ["accuracy", "macro-F1", "sensitivity COVID", "sensitivity Normal"]
    assert e.intervals.loc["accuracy"].tolist() == [0.3, 0.9] and e.intervals.loc["macro-F1"].tolist() == [0.2, 0.45]
    assert e.intervals.loc["sensitivity Normal"].isna().all()
    assert e.confusion_matrix.loc["Normal", "COVID"] == 4 and e.confusion_matrix.index.name == "true"
    saved = SAVED_BEFORE_ISSUE_25["calibration"]
    assert e.calibration.to_dict() == {"temperature": saved["temperature"], "ece": saved["ece_before"],
                                       "ece_after_scaling": saved["ece_after_temperature_scaling"]}
    report = str(e).splitlines()
    assert report[:3] == ["Run outputs/runs/x (paper_a), 10 test images",
                          "!! backbone was RANDOMLY INITIALISED (not pretrained): not transfer learning",
                          "accuracy          0.600  95% CI 0.300–0.900   (majority baseline 0.600)"]
    assert report[5] == "ECE               0.250 → 0.125 after temperature scaling (T = 1.50, fitted on validation)"
    assert report[-1] == "Normal               4   0.000   1.000       –   0.600    0.750   0.500"


def _tiny_evaluable_run(folder):
    """A two-class run of an untrained 8-pixel model, tested on 8 phantom-free grey images."""
    import keras

    from helpers.splits import SPLIT_COLUMNS
    from tests.conftest import fake_run, gray, write_png

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(inputs)))
    run = fake_run(folder, model, ["COVID", "Normal"], image_size=8)
    settings = json.loads((run.folder / "settings.json").read_text())
    (run.folder / "settings.json").write_text(json.dumps({**settings, "weights_used": "none"}))
    names = [f"{c}/images/{c}-{i}.png" for c in ("COVID", "Normal") for i in range(4)]
    for i, name in enumerate(names):
        write_png(run.folder / name, gray(seed=i, size=8))
    pd.DataFrame({"relpath": names, "label": [n.split("/")[0] for n in names], "split": "test", "repeat": 0,
                  "content_hash": ""})[SPLIT_COLUMNS].to_csv(run.folder / "split.csv", index=False)
    return run


def test_a_run_is_evaluated_once_and_read_back_unless_the_saved_metrics_cannot_stand(tmp_path, capsys, monkeypatch):
    """Issue 25: one function (`evaluate_run`), where a learner met `evaluate_run` and `metrics_of`."""
    from helpers.engine import storage

    run = _tiny_evaluable_run(tmp_path / "run")
    first = evaluation.evaluate_run(run, n_resamples=20, figures=False, progress=False)
    saved = storage.read_metrics(run.folder)
    assert saved == first.as_dict() and saved["ci95"]["resamples"] == 20
    assert len(storage.read_test_predictions(run.folder)) == 8
    capsys.readouterr()
    calls = []
    real = type(run).predict_part
    monkeypatch.setattr(type(run), "predict_part", lambda self, *a, **k: calls.append(a) or real(self, *a, **k))
    again = evaluation.evaluate_run(run, n_resamples=20, progress=False)
    assert calls == [] and capsys.readouterr().out == "", "read back, silently"
    assert str(again) == str(first) and again.intervals.equals(first.intervals)
    evaluation.evaluate_run(run, n_resamples=30, figures=False, progress=False)
    assert calls and "used 20 resamples with seed 0, not 30 with seed 0: computing it again" in capsys.readouterr().out
    calls.clear()
    evaluation.evaluate_run(run, n_resamples=30, figures=False, progress=False, again=True)
    assert calls and capsys.readouterr().out == "", "asked to: no reason to give"
    storage.write_metrics(run.folder, {k: v for k, v in saved.items() if k != "ci95"})  # an older layout
    calls.clear()
    evaluation.evaluate_run(run, n_resamples=20, figures=False, progress=False)
    assert calls and "are of an older layout (KeyError: 'ci95'): computing it again" in capsys.readouterr().out
    (run.folder / storage.MODEL).write_bytes(b"retrained since")
    calls.clear()
    evaluation.evaluate_run(run, n_resamples=20, figures=False, progress=False)
    assert calls and "are older than its model: computing it again" in capsys.readouterr().out


def test_a_comparison_is_one_object_with_mcnemars_test_on_the_saved_predictions(tmp_path):
    from helpers.engine import storage

    runs_ = [_tiny_evaluable_run(tmp_path / name) for name in ("a", "b")]
    for run in runs_:
        evaluation.evaluate_run(run, figures=False, progress=False)
    b = storage.read_test_predictions(runs_[1].folder)
    b["predicted"] = b["label"]  # b is right everywhere
    storage.write_test_predictions(runs_[1].folder, b.reset_index())
    comparison = evaluation.compare_on_test(*runs_)
    a = storage.read_test_predictions(runs_[0].folder)
    wrong_a = int((a["predicted"] != a["label"]).sum())
    assert (comparison.only_a_correct, comparison.only_b_correct) == (0, wrong_a) and wrong_a > 0
    assert comparison.p_value == pytest.approx(min(1.0, 2 * 0.5**wrong_a))
    assert list(comparison.table.columns) == [comparison.a, comparison.b]
    assert comparison.table.loc["accuracy 95% CI", comparison.a] == \
        evaluation.evaluate_run(runs_[0]).intervals.loc["accuracy"].tolist()
    (runs_[1].folder / storage.TEST_PREDICTIONS).unlink()
    with pytest.raises(FileNotFoundError, match="test_predictions.csv is missing: evaluate the run first"):
        storage.read_test_predictions(runs_[1].folder)
