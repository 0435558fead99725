"""Explorers: a few ipywidgets controls over the plain functions a notebook also calls, one per question a learner
asks ("what if I move the threshold?"). They run wherever ipywidgets does (JupyterLab, Colab, Kaggle), with no server
of our own.

An explorer computes its first state when it is made, so a notebook run without a front end (`make run`, nbval) has
it to show and to check; `.state` is always the state on screen, computed by the same function the notebook calls.
"""

from __future__ import annotations

import html
import io

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from helpers import evaluation, plots


class OperatingPointExplorer:
    """One class against the rest: a threshold slider moves the point along the ROC and precision–recall curves and
    updates the 2×2 counts, sensitivity, specificity, PPV and NPV (`evaluation.operating_point`); a prevalence slider
    moves PPV and NPV to a clinic's share of positives, beside the test set's and any other `prevalences`."""

    def __init__(self, is_positive, scores, name: str = "COVID", prevalences: dict | None = None,
                 threshold: float = 0.5, clinic: float = 0.05):
        self.is_positive, self.scores = np.asarray(is_positive, dtype=bool), np.asarray(scores, dtype=np.float64)
        self.name, self.prevalences = name, dict(prevalences or {})
        self.threshold = widgets.FloatSlider(value=threshold, min=0.0, max=1.0, step=0.01, description="threshold",
                                             continuous_update=False, readout_format=".2f")
        self.clinic = widgets.FloatSlider(value=clinic, min=0.001, max=0.5, step=0.001, description="a clinic",
                                          continuous_update=False, readout_format=".1%")
        self.summary = widgets.HTML()
        self.figure = widgets.Image(format="png")
        for slider in (self.threshold, self.clinic):
            slider.observe(self._update, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.threshold, self.clinic]), self.summary, self.figure])
        self.state = None
        self._update()

    def _update(self, _change=None) -> None:
        prevalences = {**self.prevalences, "a clinic": self.clinic.value}
        self.state = evaluation.operating_point(self.is_positive, self.scores, self.threshold.value, prevalences)
        self.summary.value = operating_point_html(self.state, self.name)
        self.figure.value = png(plots.operating_point(self.is_positive, self.scores, self.state, self.name))

    def _ipython_display_(self):
        display(self.widget)


def png(figure) -> bytes:
    """A figure as PNG bytes for an Image widget (shown alike in JupyterLab, Colab, Kaggle and a saved notebook)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def operating_point_html(point: evaluation.OperatingPoint, name: str) -> str:
    """The state as a small table; each number carries a class (`cxr-sensitivity`, …) for tests in a browser."""
    def cell(key, value):
        shown = "undefined" if value is None or np.isnan(value) else f"{value:.3f}"
        return f'<td class="cxr-{key}">{shown}</td>'

    rates = "".join(cell(key, getattr(point, key)) for key in ("sensitivity", "specificity", "ppv", "npv"))
    moved = "".join(f"<tr><td>{html.escape(str(where))}</td><td>{row.prevalence:.1%}</td>{cell('ppv-moved', row.PPV)}"
                    f"{cell('npv-moved', row.NPV)}</tr>" for where, row in point.at_prevalence.iterrows())
    return (f"<b>{html.escape(name)} if its probability ≥ {point.threshold:.2f}</b>: "
            f"{point.tp} found, {point.fn} missed, {point.fp} false alarms, {point.tn} rightly not called"
            "<table><tr><th>sensitivity</th><th>specificity</th><th>PPV</th><th>NPV</th></tr>"
            f"<tr>{rates}</tr></table>"
            "<table><tr><th>prevalence of</th><th></th><th>PPV</th><th>NPV</th></tr>" + moved + "</table>")


def one_class_scores(predictions: pd.DataFrame, classes, name: str = "COVID") -> tuple[np.ndarray, np.ndarray]:
    """(is it the class, its probability) per image of a `Run.predict_part` table."""
    if name not in classes:
        raise ValueError(f"class must be one of {list(classes)}; found {name!r}")
    return (predictions["y_true"].to_numpy() == list(classes).index(name)), predictions[name].to_numpy()
