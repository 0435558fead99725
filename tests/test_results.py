"""One shape for results (issue 37): every result type a learner meets offers `.table`, a non-empty DataFrame whose
numbers are the result's own fields, and `.describe()`, a few lines computed from those numbers. Each result is built
here from small arrays and tables: no model is trained."""

import copy

import numpy as np
import pandas as pd
import pytest

from helpers import cam, controls, curves, data, evaluation, runs
from helpers.datasets import find_dataset
from tests.test_cam import scored_table, zoned_lesions
from tests.test_controls import _pair
from tests.test_evaluation import SAVED_BEFORE_ISSUE_25


def check_shape(result) -> tuple[pd.DataFrame, str]:
    """`.table` is a property giving a non-empty DataFrame; `.describe()` a non-empty string."""
    table, described = result.table, result.describe()
    assert isinstance(table, pd.DataFrame) and not table.empty, type(result).__name__
    assert isinstance(described, str) and described.strip(), type(result).__name__
    return table, described


def test_an_operating_point_is_one_row_and_says_its_counts_and_rates():
    is_covid = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    scores = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.2, 0.1, 0.1, 0.4, 0.05])
    point = evaluation.operating_point(is_covid, scores, 0.5, {"a clinic": 0.05})
    table, described = check_shape(point)
    assert len(table) == 1 and table.index[0] == 0.5
    row = table.iloc[0]
    assert (row["tp"], row["fp"], row["fn"], row["tn"]) == (point.tp, point.fp, point.fn, point.tn) == (3, 1, 1, 5)
    assert (row["sensitivity"], row["specificity"], row["ppv"], row["npv"]) == pytest.approx(
        (point.sensitivity, point.specificity, point.ppv, point.npv))
    assert "3 found, 1 missed" in described and f"sensitivity {point.sensitivity:.3f}" in described
    clinic = point.at_prevalence.loc["a clinic", "PPV"]
    assert f"PPV {clinic:.3f}" in described, "the other prevalences too"


def test_a_class_mix_table_is_its_own_and_describe_is_what_str_says():
    index = pd.DataFrame({"relpath": [f"{c}-{i}" for c, n in (("A", 60), ("B", 20)) for i in range(n)],
                          "label": ["A"] * 60 + ["B"] * 20})
    sample = index.groupby("label").head(20).assign(split="train")
    sample.loc[sample.groupby("label").head(5).index, "split"] = "test"
    mix = evaluation.class_mix(sample, index, ["A", "B"])
    table, described = check_shape(mix)
    assert table["test images"].tolist() == [5, 5] and table["dataset share"].tolist() == [0.75, 0.25]
    assert described == str(mix) and "A 75%" in described


def test_an_evaluation_table_is_its_per_class_table_and_describe_its_report():
    e = evaluation.Evaluation.from_dict(SAVED_BEFORE_ISSUE_25)
    table, described = check_shape(e)
    pd.testing.assert_frame_equal(table, e.per_class)
    assert table.loc["COVID", "support"] == 6 and table.loc["COVID", "ppv"] == 0.6
    assert described == str(e) and f"accuracy          {e.accuracy:.3f}" in described


def test_a_comparison_table_is_side_by_side_and_describe_names_both_runs_and_mcnemar():
    a = evaluation.Evaluation.from_dict(SAVED_BEFORE_ISSUE_25)
    saved_b = copy.deepcopy(SAVED_BEFORE_ISSUE_25)
    saved_b.update(accuracy=0.8, balanced_accuracy=0.75, macro_f1=0.7)
    b = evaluation.Evaluation.from_dict(saved_b)
    side = pd.DataFrame({name: evaluation._side_by_side(e) for name, e in (("first", a), ("second", b))})
    comparison = evaluation.Comparison(side, "first", "second", only_a_correct=1, only_b_correct=3, p_value=0.625)
    table, described = check_shape(comparison)
    assert list(table.columns) == ["first", "second"] and table.loc["accuracy"].tolist() == [0.6, 0.8]
    assert "first" in described and "second" in described
    assert "0.600" in described and "0.800" in described and "p = 0.625" in described


def test_an_independence_check_is_one_row_of_its_numbers():
    check = evaluation.independence_check(evaluation.PAPER_A_FIGURE_2)
    table, described = check_shape(check)
    assert len(table) == 1
    row = table.iloc[0]
    assert row["images"] == check.images and row["correct"] == check.correct
    assert (row["accuracy"], row["accuracy if independent"], row["kappa"], row["p value"]) == pytest.approx(
        (check.accuracy, check.accuracy_if_independent, check.kappa, check.p_value))
    assert f"{check.accuracy:.1%}" in described and f"kappa {check.kappa:.3f}" in described


def test_maps_table_is_one_row_per_image_with_its_probabilities():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(3), 4)
    found = cam.Maps(rng.uniform(size=(4, 2, 2, 3)), probabilities, ("A", "B", "C"), None, "cam", "features", "max")
    table, described = check_shape(found)
    assert len(table) == 4 and table["predicted"].tolist() == found.predicted
    np.testing.assert_allclose(table[["A", "B", "C"]].to_numpy(), probabilities)
    assert "4 images" in described and "2×2" in described and "CAM" in described
    one_each = cam.Maps(rng.uniform(size=(4, 2, 2)), probabilities, ("A", "B", "C"), ("A", "B", "B", "C"), "grad-cam",
                        "features", None)
    table, described = check_shape(one_each)
    assert table["map of"].tolist() == ["A", "B", "B", "C"] and "Grad-CAM" in described


def test_a_localisation_table_is_per_image_and_describe_its_overall_row():
    lesions, lungs, labels = zoned_lesions(n_per_class=10)
    rng = np.random.default_rng(2)
    table = scored_table(rng.uniform(size=(len(labels), 4, 4)), lesions, lungs, labels).assign(correct=True)
    found = cam.Localisation(table, cam._summary(table))
    shown, described = check_shape(found)
    assert shown is found.table and len(shown) == len(labels)
    assert f"{found.overall['pointing game']:.0%} of the {len(labels)} images" in described


def test_edit_scores_table_is_per_class_and_describe_says_each_edit():
    labels, predicted, changes = _pair()
    table = pd.DataFrame({(v, m): [0.5, 0.4, 0.3, 0.2, 0.35] for v in predicted for m in ("accuracy", "informedness")},
                         index=["lungs", "outside", "alike", "guess", "all"])
    scores = controls.EditScores(table, 0.25, labels, predicted, changes)
    shown, described = check_shape(scores)
    assert shown.loc["all", ("as is", "accuracy")] == 0.35
    assert "accuracy 35%" in described and "lungs hidden" in described


def curve_on(class_images: dict, accuracy=(0.5, 1.0)) -> pd.DataFrame:
    curve = pd.DataFrame({"epoch": range(len(accuracy)), "train_seconds": [10.0 * (i + 1) for i in range(len(
        accuracy))], "one_off_seconds": 3.0, "balanced_accuracy": accuracy})
    curve["low"], curve["high"] = curves.accuracy_interval(curve["balanced_accuracy"], class_images)
    curve.attrs = {"class_images": class_images, "level": 0.95}
    return curve


def test_a_resolution_is_one_row_and_describe_is_its_sentences():
    about = curves.resolution(curve_on({"a": 6, "b": 6, "c": 6}))
    table, described = check_shape(about)
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["held-out images"], row["correct needed"], row["images needed"]) == (18, 18, 73)
    assert (row["points per error"], row["lower bound if all correct"]) == pytest.approx(
        (about.points_per_error, about.low_if_all_correct))
    assert not row["can show"] and about.text in described and about.verdict in described


def test_a_time_to_accuracy_is_one_row_reached_or_not():
    when = curves.time_to_accuracy(curve_on({"a": 500, "b": 500}, accuracy=(0.9, 0.97)))
    table, described = check_shape(when)
    row = table.iloc[0]
    assert (row["threshold"], row["seconds"], row["low"], row["high"]) == pytest.approx(
        (0.95, when.seconds, when.low, when.high))
    assert row["reached"] and row["shown above"] and row["held-out images"] == 1000
    assert f"{when.seconds:.1f} training seconds" in described and f"{when.low:.3f}" in described
    never = curves.time_to_accuracy(curve_on({"a": 6, "b": 6}, accuracy=(0.5, 0.9)))
    table, described = check_shape(never)
    assert not table.iloc[0]["reached"] and np.isnan(table.iloc[0]["seconds"]) and "never reached 95%" in described
    plain = curves.time_to_accuracy(pd.DataFrame({"train_seconds": [5.0], "balanced_accuracy": [0.96]}))
    table, described = check_shape(plain)
    assert table.iloc[0]["seconds"] == 5.0 and "5.0 training seconds" in described


def test_a_repeats_interval_is_one_row_of_its_mean_and_both_intervals():
    found = runs.corrected_resampled_t_interval([0.80, 0.90, 0.85, 0.95], 162, 18, level=0.90)
    table, described = check_shape(found)
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["mean"], row["repeats"], row["level"], row["widening"]) == pytest.approx(
        (found.mean, found.repeats, found.level, found.widening))
    assert (row["plain low"], row["plain high"]) == pytest.approx(found.plain)
    assert (row["corrected low"], row["corrected high"]) == pytest.approx(found.corrected)
    assert "0.875" in described and f"{found.corrected[0]:.3f}" in described


def test_a_cross_validation_table_is_one_row_per_repeat_and_describe_gives_its_interval():
    table = pd.DataFrame({"balanced accuracy, last epoch": [0.80, 0.90, 0.85, 0.95]},
                         index=pd.Index([0, 1, 2, 3], name="repeat"))
    cross_validation = runs.CrossValidation(runs=[], table=table, n_train=162, n_test=18)
    shown, described = check_shape(cross_validation)
    assert shown is cross_validation.table
    assert "4 repeats" in described and "0.875" in described
    assert f"{cross_validation.interval().corrected[0]:.3f}" in described
    one = runs.CrossValidation(runs=[], table=table.head(1), n_train=162, n_test=18)
    assert "0.800" in check_shape(one)[1], "one repeat: no interval, still a sentence"


def test_a_scan_table_is_one_row_per_class(make_tree):
    counts = {"COVID": 3, "Lung_Opacity": 1, "Normal": 2, "Viral Pneumonia": 2}
    scan = data.scan_dataset(find_dataset(make_tree(counts)))
    table, described = check_shape(scan)
    assert table["images"].to_dict() == scan.class_counts() == counts
    assert table["share"].sum() == pytest.approx(1.0) and table["lung masks"].tolist() == [3, 1, 2, 2]
    assert "8 usable images" in described and "COVID 3" in described
    assert str(scan) == data.format_report(scan), "print(scan) still shows the full report"
