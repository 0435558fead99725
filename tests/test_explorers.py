"""Explorers (issue 23): each a thin layer of ipywidgets over a plain function, whose state is that function's."""

import numpy as np
import pandas as pd
import pytest

from helpers import evaluation, explorers

IS_COVID = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
SCORES = np.array([0.9, 0.6, 0.3, 0.7, 0.2, 0.1, 0.4, 0.05])


def test_an_operating_point_counts_rates_and_moves_ppv_and_npv_by_bayes_rule():
    point = evaluation.operating_point(IS_COVID, SCORES, 0.5, {"a clinic": 0.05})
    assert (point.tp, point.fn, point.fp, point.tn) == (2, 1, 1, 4)
    assert (point.sensitivity, point.specificity, point.ppv, point.npv) == pytest.approx((2 / 3, 4 / 5, 2 / 3, 4 / 5))
    assert point.counts().loc["has it", "called positive"] == 2 and point.false_positive_rate == pytest.approx(0.2)
    clinic = point.at_prevalence.loc["a clinic"]
    tp, fp = 2 / 3 * 0.05, 0.2 * 0.95  # Bayes' rule by hand
    assert clinic["PPV"] == pytest.approx(tp / (tp + fp)) and clinic["PPV"] < 0.2 < point.ppv
    test_set = point.at_prevalence.loc["test set"]
    assert (test_set["prevalence"], test_set["PPV"], test_set["NPV"]) == pytest.approx((3 / 8, point.ppv, point.npv))


def test_an_operating_point_says_undefined_rather_than_zero_and_refuses_mismatched_inputs():
    nothing_called = evaluation.operating_point(IS_COVID, SCORES, 0.95)
    assert nothing_called.tp == nothing_called.fp == 0 and np.isnan(nothing_called.ppv)
    assert nothing_called.sensitivity == 0 and nothing_called.specificity == 1
    with pytest.raises(ValueError, match="need one score per image"):
        evaluation.operating_point(IS_COVID, SCORES[:3], 0.5)


def test_the_operating_point_explorer_shows_the_functions_state_and_follows_its_sliders():
    explorer = explorers.OperatingPointExplorer(IS_COVID, SCORES, "COVID", {"the dataset": 0.2}, clinic=0.05)
    first = evaluation.operating_point(IS_COVID, SCORES, 0.5, {"the dataset": 0.2, "a clinic": 0.05})
    assert explorer.state.sensitivity == first.sensitivity
    pd.testing.assert_frame_equal(explorer.state.at_prevalence, first.at_prevalence)
    assert '<td class="cxr-sensitivity">0.667</td>' in explorer.summary.value
    first_figure = bytes(explorer.figure.value)
    assert first_figure.startswith(b"\x89PNG"), "the figure of the first state is drawn"

    explorer.threshold.value = 0.25
    assert explorer.state.sensitivity == 1.0 and '<td class="cxr-sensitivity">1.000</td>' in explorer.summary.value
    explorer.clinic.value = 0.3
    assert explorer.state.at_prevalence.loc["a clinic", "prevalence"] == pytest.approx(0.3)
    assert bytes(explorer.figure.value) != first_figure, "redrawn"


def test_one_class_scores_come_from_a_prediction_table_and_name_a_missing_class():
    table = pd.DataFrame({"y_true": [0, 1, 2], "COVID": [0.8, 0.1, 0.3], "Normal": [0.1, 0.8, 0.3],
                          "Viral Pneumonia": [0.1, 0.1, 0.4]})
    classes = ["COVID", "Normal", "Viral Pneumonia"]
    is_positive, scores = explorers.one_class_scores(table, classes, "Normal")
    assert is_positive.tolist() == [False, True, False] and scores.tolist() == [0.1, 0.8, 0.3]
    with pytest.raises(ValueError, match=r"class must be one of \[.*'Viral Pneumonia'\]; found 'Lung'"):
        explorers.one_class_scores(table, classes, "Lung")
