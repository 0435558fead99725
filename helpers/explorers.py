"""Explorers: a few ipywidgets controls over the plain functions a notebook also calls, one per question a learner
asks ("what if I move the threshold?"). They run wherever ipywidgets does (JupyterLab, Colab, Kaggle), with no server
of our own.

An explorer computes its first state when it is made, so a notebook run without a front end (`make run`, nbval) has
it to show and to check; `.state` is always the state on screen, computed by the same function the notebook calls.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import tempfile
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from helpers import cam, evaluation, image_files, pipeline, plots
from helpers.runs import as_run


class Explorer:
    """What every explorer shows: its widget where ipywidgets run (JupyterLab, Colab, Kaggle), and, where they do
    not (a notebook saved after `make run`, seen on GitHub or on the course's website), its first state as a
    still: the same numbers and figure in plain HTML. Each front end picks the richest form it can show."""

    widget: widgets.Widget
    summary: widgets.HTML
    figure: widgets.Image

    def _repr_mimebundle_(self, include=None, exclude=None):
        still = self.summary.value
        if self.figure.value:
            still += f'<img src="data:image/png;base64,{base64.b64encode(bytes(self.figure.value)).decode()}"/>'
        return {**widget_view(self.widget), "text/html": still}


def widget_view(widget: widgets.Widget) -> dict:
    """The widget's view as a display bundle, on ipywidgets 8 and on 7 (Colab ships 7.7.1): 7's widgets display
    themselves (`_ipython_display_`) and have no `_repr_mimebundle_`, so the same bundle is made here."""
    if hasattr(widget, "_repr_mimebundle_"):
        return widget._repr_mimebundle_()
    widget._handle_displayed()  # what 7's own display does after showing the view
    return {"text/plain": repr(widget)[:110],
            "application/vnd.jupyter.widget-view+json": {"version_major": 2, "version_minor": 0,
                                                         "model_id": widget.model_id}}


def uploaded_files(value) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each file in a FileUpload's value: ipywidgets 8 holds a tuple of dicts with "name" and
    "content", ipywidgets 7 (Colab's) a dict of file name → {"metadata", "content"}."""
    if isinstance(value, dict):
        return [(str(name), bytes(upload["content"])) for name, upload in value.items()]
    return [(str(upload["name"]), bytes(upload["content"])) for upload in value]


class OperatingPointExplorer(Explorer):
    """One class against the rest, on a table of predictions (`Run.predict_part`: a `label` column and one column
    of probabilities per class): a threshold slider moves the point along the ROC and precision–recall curves and
    updates the 2×2 counts, sensitivity, specificity, PPV and NPV (`evaluation.operating_point`); a prevalence slider
    moves PPV and NPV to a clinic's share of positives, beside the test set's and any other `prevalences`."""

    def __init__(self, predictions: pd.DataFrame, name: str = "COVID", prevalences: dict | None = None,
                 threshold: float = 0.5, clinic: float = 0.05):
        if name not in predictions.columns or "label" not in predictions.columns:
            raise ValueError(f"need a table of predictions with a 'label' column and a column of {name!r}'s "
                             f"probabilities; found columns {list(predictions.columns)}")
        self.is_positive = (predictions["label"] == name).to_numpy()
        self.scores = predictions[name].to_numpy(dtype=np.float64)
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
        self.figure.value = png(plots.operating_point(self.is_positive, self.scores, self.state, self.name))
        self.summary.value = operating_point_html(self.state, self.name)  # last: the numbers say it is all drawn



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


# --------------------------------------------------------------------------- 02: what the model is given


def model_input(path, size: int, normalisation: str = "resnet50", flip: bool = False) -> np.ndarray:
    """One image file as the model receives it (size, size, 3): decoded to grayscale, resized, flipped if asked,
    normalised. The course pipeline's steps, for one file."""
    pixels = image_files.load_grayscale(path, size)
    if flip:
        pixels = np.fliplr(pixels)
    return np.asarray(pipeline.to_model_input(pixels[np.newaxis, ..., np.newaxis], normalisation))[0]


class PreprocessingExplorer(Explorer):
    """Image, input size, normalisation and flip: the model's input beside the histogram of its values."""

    def __init__(self, paths, sizes=(64, 128, 224, 299), normalisations=("rescale", "resnet50"), size: int = 224):
        self.paths = [str(p) for p in paths]
        self.image = widgets.Dropdown(options=[(Path(p).name, p) for p in self.paths], description="image")
        self.size = widgets.ToggleButtons(options=list(sizes), value=size if size in sizes else sizes[0],
                                          description="size (px)")
        self.normalisation = widgets.ToggleButtons(options=list(normalisations), description="normalise")
        self.flip = widgets.Checkbox(value=False, description="flip left–right")
        self.summary, self.figure = widgets.HTML(), widgets.Image(format="png")
        for control in (self.image, self.size, self.normalisation, self.flip):
            control.observe(self._update, names="value")
        self.widget = widgets.VBox([self.image, self.size, widgets.HBox([self.normalisation, self.flip]),
                                    self.summary, self.figure])
        self.state = None
        self._update()

    def _update(self, _change=None) -> None:
        self.state = model_input(self.image.value, self.size.value, self.normalisation.value, self.flip.value)
        x = self.state
        title = f"{self.normalisation.value}, {self.size.value} px" + (", flipped" if self.flip.value else "")
        self.figure.value = png(plots.model_input(x, title))
        self.summary.value = (f"{x.shape[0]}×{x.shape[1]}×{x.shape[2]} {x.dtype}: values from "
                              f'<span class="cxr-min">{x.min():.1f}</span> to <span class="cxr-max">{x.max():.1f}'
                              f'</span>, mean <span class="cxr-mean">{x.mean():.1f}</span>')



# --------------------------------------------------------------------------- 03: your own radiograph


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A run's answer for one image file: every class's probability, and why it should not be trusted (if so)."""

    image: str
    probabilities: pd.Series  # class → probability; empty if the file could not be read
    error: str | None  # why the file could not be read
    warning: str | None  # why the image looks nothing like a chest radiograph (`predict` prints the same)

    @property
    def predicted(self) -> str | None:
        return None if self.probabilities.empty else str(self.probabilities.idxmax())


def judge(run, path) -> Verdict:
    """What `python -m helpers predict PATH --run RUN` says about one image: probabilities and warning."""
    run = as_run(run)
    row = run.predict([path]).iloc[0]
    error = row["error"] if isinstance(row["error"], str) else None
    probabilities = pd.Series(dtype=float) if error else row[run.classes].astype(float)
    return Verdict(str(path), probabilities, error, None if error else image_files.radiograph_doubt(path))


class RadiographExplorer(Explorer):
    """Upload a PNG or JPEG: every class's probability from `run`, with the command line's warning for an image
    that does not look like a chest radiograph. Starts on `example` (a path) so that there is something to see."""

    def __init__(self, run, example):
        self.run = as_run(run)
        self.upload = widgets.FileUpload(accept=".png,.jpg,.jpeg", multiple=False, description="your image")
        self.upload.observe(self._uploaded, names="value")
        self.summary, self.figure = widgets.HTML(), widgets.Image(format="png")
        self.widget = widgets.VBox([self.upload, widgets.HBox([self.figure, self.summary])])
        self._folder = tempfile.TemporaryDirectory(prefix="cxr-upload-")
        self.state = None
        self.show(example)

    def show(self, path) -> Verdict:
        """Judge one image file and show the verdict."""
        self.state = judge(self.run, path)
        self.figure.value = b"" if self.state.error else png(plots.image_versions(
            {Path(path).name: image_files.load_grayscale(path)[np.newaxis]},
            caption=plots.caption(None, self.run)))  # the image is the user's; the model is the run's
        self.summary.value = verdict_html(self.state)
        return self.state

    def _uploaded(self, change) -> None:
        for name, content in uploaded_files(change["new"]):  # one at a time (multiple=False)
            self.show(saved_upload(self._folder.name, name, content))



def saved_upload(folder, name: str, content: bytes) -> Path:
    """An uploaded file written to `folder` under its own name (no path parts), for the functions taking paths."""
    own_name = Path(name.replace("\\", "/")).name
    target = Path(folder) / (own_name if own_name not in ("", ".", "..") else "upload")
    target.write_bytes(content)
    return target


def verdict_html(verdict: Verdict) -> str:
    name = html.escape(Path(verdict.image).name)
    if verdict.error:
        return f'<b>{name}</b>: <span class="cxr-error">{html.escape(verdict.error)}</span>'
    rows = "".join(f'<tr><td>{html.escape(c)}</td><td class="cxr-probability" data-class="{html.escape(c)}">'
                   f"{p:.3f}</td></tr>" for c, p in verdict.probabilities.items())
    warning = (f'<p class="cxr-warning">⚠ This image {html.escape(verdict.warning)}: far from a chest radiograph, so '
               "its probabilities mean nothing.</p>" if verdict.warning else "")
    return (f"<b>{name}</b>: most probable <b>{html.escape(verdict.predicted)}</b>{warning}"
            f"<table><tr><th>class</th><th>probability</th></tr>{rows}</table>")


# --------------------------------------------------------------------------- 05: where the model looks


@dataclasses.dataclass(frozen=True)
class MapView:
    """One image under one class's map: the map (H, W, 0–1), every class's probability, the map's share inside
    the lungs (None without a lung mask; NaN when the map is empty: no evidence for the class anywhere)."""

    map: np.ndarray
    probabilities: pd.Series
    energy_in_lungs: float | None


def map_view(run, pixels, class_name: str, method: str = "cam", layer: str | None = None,
             lungs=None) -> MapView:
    """The map `predict --cam` draws (`cam.maps`) of one class for one uint8 image (H, W) at the run's size."""
    run = as_run(run)
    computed = cam.maps(run, np.asarray(pixels)[np.newaxis], method, class_name, layer)
    one = computed.upsampled(run.image_size)[0]
    inside = None if lungs is None else float(cam.energy_inside(one[np.newaxis], np.asarray(lungs)[np.newaxis])[0])
    return MapView(one, pd.Series(computed.probabilities[0], index=run.classes), inside)


class MapExplorer(Explorer):
    """A test image (or an upload), a class, CAM or Grad-CAM, a live layer and the overlay's opacity; the
    probabilities beside the map. `rows`: a run's part with `path` (and `mask_path` for the lungs' share)."""

    def __init__(self, run, rows: pd.DataFrame, layers=cam.FINER_LAYERS, opacity: float = 0.45):
        self.run = as_run(run)
        self.rows = rows.reset_index(drop=True)
        options = [(f"{row.label}: {Path(row.path).name}", i) for i, row in self.rows.iterrows()]
        self.image = widgets.Dropdown(options=options, description="image")
        self.upload = widgets.FileUpload(accept=".png,.jpg,.jpeg", multiple=False, description="or yours")
        self.class_name = widgets.Dropdown(options=self.run.classes, description="class")
        self.method = widgets.ToggleButtons(options=[("CAM", "cam"), ("Grad-CAM", "grad-cam")], description="method")
        self.layer = widgets.Dropdown(options=[("last block", None), *[(n, n) for n in layers]], description="layer")
        self.opacity = widgets.FloatSlider(value=opacity, min=0.0, max=1.0, step=0.05, description="opacity",
                                           continuous_update=False)
        self.summary, self.figure = widgets.HTML(), widgets.Image(format="png")
        self._folder = tempfile.TemporaryDirectory(prefix="cxr-upload-")
        self.upload.observe(self._uploaded, names="value")
        for control in (self.image, self.class_name, self.method, self.layer, self.opacity):
            control.observe(self._update, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.image, self.upload]),
                                    widgets.HBox([self.class_name, self.layer]), self.method, self.opacity,
                                    widgets.HBox([self.figure, self.summary])])
        self.state = None
        self._update()

    def _image(self):
        """(name, uint8 pixels at the run's size, lung mask or None) of the chosen image."""
        choice = self.image.value
        if isinstance(choice, str):  # an upload
            return Path(choice).name, image_files.load_grayscale(choice, self.run.image_size), None
        row = self.rows.loc[choice]
        lungs = cam.read_masks([row.get("mask_path")], self.run.image_size)
        return Path(row.path).name, image_files.load_grayscale(row.path, self.run.image_size), \
            None if lungs is None else lungs[0]

    def _update(self, _change=None) -> None:
        self.layer.disabled = self.method.value == "cam"  # CAM is defined on the last block only
        layer = None if self.layer.disabled else self.layer.value
        name, pixels, lungs = self._image()
        self.state = map_view(self.run, pixels, self.class_name.value, self.method.value, layer, lungs)
        shown = self.run.classes.index(self.class_name.value)
        self.figure.value = png(plots.cam_overlays(
            pixels[np.newaxis], self.state.map[np.newaxis, ..., np.newaxis], [self.class_name.value],
            self.state.probabilities.to_numpy()[np.newaxis, [shown]], titles=[name], alpha=self.opacity.value,
            caption=plots.caption(None, self.run)))  # the test images' kind is the run's; an upload is the user's
        self.summary.value = map_view_html(self.state, self.class_name.value)

    def _uploaded(self, change) -> None:
        for name, content in uploaded_files(change["new"]):
            target = saved_upload(self._folder.name, name, content)
            self.image.options = [*[o for o in self.image.options if o[1] != str(target)],
                                  (f"yours: {target.name}", str(target))]
            self.image.value = str(target)  # redraws



def map_view_html(view: MapView, class_name: str) -> str:
    rows = "".join(f'<tr><td>{html.escape(c)}</td><td class="cxr-probability" data-class="{html.escape(c)}">'
                   f"{p:.3f}</td></tr>" for c, p in view.probabilities.items())
    lungs = ("no lung mask" if view.energy_in_lungs is None else "none: the map is empty"
             if np.isnan(view.energy_in_lungs) else f"{view.energy_in_lungs:.3f}")
    return (f"<table><tr><th>class</th><th>probability</th></tr>{rows}</table>"
            f"<p>share of the {html.escape(class_name)} map inside the lungs: "
            f'<span class="cxr-lungs">{lungs}</span></p>')
