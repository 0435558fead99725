"""Explorers (issue 23): each a thin layer of ipywidgets over a plain function, whose state is that function's."""

import datetime
from pathlib import Path

import ipywidgets
import numpy as np
import pandas as pd
import pytest

from helpers import evaluation, explorers

IS_COVID = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
SCORES = np.array([0.9, 0.6, 0.3, 0.7, 0.2, 0.1, 0.4, 0.05])
PREDICTIONS = pd.DataFrame({"label": np.where(IS_COVID, "COVID", "Normal"), "COVID": SCORES, "Normal": 1 - SCORES})


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
    explorer = explorers.OperatingPointExplorer(PREDICTIONS, "COVID", {"the dataset": 0.2}, clinic=0.05)
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


def test_the_operating_point_explorer_takes_a_table_of_predictions_and_names_a_missing_class():
    explorer = explorers.OperatingPointExplorer(PREDICTIONS, "Normal")
    assert explorer.is_positive.tolist() == (~IS_COVID).tolist() and explorer.scores.tolist() == (1 - SCORES).tolist()
    assert (explorer.state.tp, explorer.state.fn) == (4, 1)  # Normal's images: all but the fourth (0.3) score ≥ 0.5
    with pytest.raises(ValueError, match=r"a column of 'Lung''s probabilities; found columns \['label', 'COVID', "):
        explorers.OperatingPointExplorer(PREDICTIONS, "Lung")
    with pytest.raises(ValueError, match="with a 'label' column"):
        explorers.OperatingPointExplorer(PREDICTIONS.drop(columns="label"), "COVID")


# --------------------------------------------------------------------------- 02, 03, 05


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A run of a linear-head toy model (random weights: only what the explorers compute from it matters)."""
    import keras

    from helpers import models
    from tests.conftest import fake_run

    keras.utils.set_random_seed(0)
    model = models.build_model("linear", n_classes=3, image_size=32, weights="none", backbone="toy").model
    run = fake_run(tmp_path_factory.mktemp("toy") / "run", model, ["COVID", "Normal", "Viral Pneumonia"], 32)
    model.save(run.folder / "model.keras")  # for the command line, which loads it
    return run


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A radiograph-like picture with a left-right gradient, a flat one, a file that is no image, and lung mask."""
    from tests.conftest import write_png

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    ramp = np.clip(np.linspace(20, 230, 96)[np.newaxis, :] + rng.normal(0, 12, (96, 96)), 0, 255).astype(np.uint8)
    lungs = np.zeros((96, 96), np.uint8)
    lungs[20:80, 10:45] = lungs[20:80, 55:90] = 255
    (folder / "broken.png").write_bytes(b"not a png")
    return {"ramp": write_png(folder / "ramp.png", ramp), "flat": write_png(folder / "flat.png", np.full((96, 96),
            128, np.uint8)), "broken": folder / "broken.png", "lungs": write_png(folder / "lungs.png", lungs)}


def upload_of(path) -> tuple:
    """What ipywidgets 8's FileUpload holds after a learner picks this file."""
    content = Path(path).read_bytes()
    return ({"name": Path(path).name, "type": "image/png", "size": len(content),
             "last_modified": datetime.datetime(2026, 12, 2, tzinfo=datetime.timezone.utc),
             "content": memoryview(content)},)


def upload(widget, path) -> None:
    """Do to `widget` what the front end does when a learner picks this file, on the installed ipywidgets: 8 sets
    the value; 7 (Colab's) syncs the files' metadata and bytes, then a counter that makes the value a dict."""
    if int(ipywidgets.__version__.split(".")[0]) >= 8:
        widget.value = upload_of(path)
        return
    content = Path(path).read_bytes()
    widget.metadata = [{"name": Path(path).name, "type": "image/png", "size": len(content),
                        "lastModified": 1764633600000}]
    widget.data = [content]
    widget._counter += 1


def test_uploaded_files_reads_both_ipywidgets_forms_and_keeps_no_path_part(tmp_path):
    seven = {"x.png": {"metadata": {"name": "x.png", "type": "image/png", "size": 3}, "content": b"abc"}}
    eight = ({"name": "x.png", "type": "image/png", "size": 3, "content": memoryview(b"abc")},)
    assert explorers.uploaded_files(seven) == explorers.uploaded_files(eight) == [("x.png", b"abc")]
    assert explorers.uploaded_files({}) == explorers.uploaded_files(()) == []
    for name, kept in (("../../evil.png", "evil.png"), ("..", "upload"), ("C:\\Users\\me\\x.png", "x.png")):
        assert explorers.saved_upload(tmp_path, name, b"abc") == tmp_path / kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.png", "upload", "x.png"]


def test_model_input_is_the_pipelines_for_one_file_flipped_when_asked(images):
    from helpers import image_files, pipeline

    pixels = image_files.load_grayscale(images["ramp"], 64)
    expected = pipeline.to_model_input(pixels[np.newaxis, ..., np.newaxis], "resnet50").numpy()[0]
    np.testing.assert_allclose(explorers.model_input(images["ramp"], 64, "resnet50"), expected)
    flipped = explorers.model_input(images["ramp"], 64, "rescale", flip=True)
    assert flipped.shape == (64, 64, 3) and 0 <= flipped.min() and flipped.max() <= 1
    np.testing.assert_allclose(flipped, explorers.model_input(images["ramp"], 64, "rescale")[:, ::-1])
    assert flipped[:, 0].mean() > flipped[:, -1].mean(), "the bright right side is now on the left"


def test_the_preprocessing_explorer_shows_the_functions_input_and_follows_its_controls(images):
    explorer = explorers.PreprocessingExplorer([images["ramp"]], sizes=(64, 128), size=128)
    np.testing.assert_array_equal(explorer.state, explorers.model_input(images["ramp"], 128, "rescale"))
    assert f'<span class="cxr-max">{explorer.state.max():.1f}</span>' in explorer.summary.value
    first_figure = bytes(explorer.figure.value)
    explorer.size.value, explorer.normalisation.value, explorer.flip.value = 64, "resnet50", True
    np.testing.assert_array_equal(explorer.state, explorers.model_input(images["ramp"], 64, "resnet50", flip=True))
    assert explorer.state.shape == (64, 64, 3) and "64×64×3" in explorer.summary.value
    assert bytes(explorer.figure.value) != first_figure


def test_judging_an_image_gives_predicts_probabilities_and_the_command_lines_warning(toy_run, images, capsys):
    from helpers.cli import main

    verdict = explorers.judge(toy_run, images["ramp"])
    expected = toy_run.predict([images["ramp"]]).iloc[0]
    assert verdict.probabilities.to_dict() == pytest.approx(expected[toy_run.classes].astype(float).to_dict())
    assert verdict.warning is None and verdict.predicted == expected["predicted"]
    flat = explorers.judge(toy_run, images["flat"])
    assert flat.warning.startswith("is almost uniform")
    main(["predict", str(images["flat"]), "--run", str(toy_run.folder)])
    assert f"{images['flat']} {flat.warning}: far from a chest radiograph" in capsys.readouterr().err, \
        "the same warning as the command line"
    broken = explorers.judge(toy_run, images["broken"])
    assert broken.error and broken.probabilities.empty and broken.predicted is None
    assert 'class="cxr-error"' in explorers.verdict_html(broken)


def test_the_radiograph_explorer_judges_an_uploaded_file(toy_run, images):
    explorer = explorers.RadiographExplorer(toy_run, images["ramp"])
    assert explorer.state.probabilities.equals(explorers.judge(toy_run, images["ramp"]).probabilities)
    assert "cxr-warning" not in explorer.summary.value and bytes(explorer.figure.value).startswith(b"\x89PNG")
    upload(explorer.upload, images["flat"])
    assert Path(explorer.state.image).name == "flat.png" and explorer.state.warning.startswith("is almost uniform")
    assert 'class="cxr-warning"' in explorer.summary.value and "flat.png" in explorer.summary.value
    upload(explorer.upload, images["broken"])
    assert explorer.state.error and 'class="cxr-error"' in explorer.summary.value


def test_a_map_view_is_the_map_predict_cam_draws_with_the_lungs_share(toy_run, images):
    from helpers import cam, image_files

    pixels = image_files.load_grayscale(images["ramp"], 32)
    lungs = image_files.load_grayscale(images["lungs"], 32) > 127
    view = explorers.map_view(toy_run, pixels, "Normal", "grad-cam", "toy1_out", lungs)
    every_class = cam.maps(toy_run, pixels[np.newaxis], "grad-cam", layer="toy1_out")
    maps = every_class.upsampled(32)
    np.testing.assert_allclose(view.map, maps[0, ..., 1], atol=1e-6)
    np.testing.assert_allclose(view.probabilities.to_numpy(), every_class.probabilities[0])
    assert view.energy_in_lungs == pytest.approx(cam.energy_inside(maps[:1, ..., 1], lungs[np.newaxis])[0])
    assert explorers.map_view(toy_run, pixels, "Normal").energy_in_lungs is None, "no mask, no share"


def test_the_map_explorer_follows_image_class_method_layer_and_opacity(toy_run, images):
    from helpers import image_files

    rows = pd.DataFrame({"path": [str(images["ramp"])], "label": ["Normal"], "mask_path": [str(images["lungs"])]})
    explorer = explorers.MapExplorer(toy_run, rows, layers=("toy1_out",))
    pixels = image_files.load_grayscale(images["ramp"], 32)
    lungs = image_files.load_grayscale(images["lungs"], 32) > 127
    first = explorers.map_view(toy_run, pixels, "COVID", "cam", None, lungs)
    np.testing.assert_allclose(explorer.state.map, first.map)
    assert explorer.layer.disabled, "CAM has one layer: the last block"
    assert explorer.summary.value == explorers.map_view_html(first, "COVID")
    figures = [bytes(explorer.figure.value)]
    explorer.method.value, explorer.layer.value, explorer.class_name.value = "grad-cam", "toy1_out", "Normal"
    wanted = explorers.map_view(toy_run, pixels, "Normal", "grad-cam", "toy1_out", lungs)
    assert not explorer.layer.disabled
    np.testing.assert_allclose(explorer.state.map, wanted.map)
    assert f'<span class="cxr-lungs">{wanted.energy_in_lungs:.3f}</span>' in explorer.summary.value
    explorer.opacity.value = 0.9
    figures.append(bytes(explorer.figure.value))
    upload(explorer.upload, images["flat"])
    assert explorer.image.label == "yours: flat.png" and "no lung mask" in explorer.summary.value
    assert len(set(figures + [bytes(explorer.figure.value)])) == 3, "each change redrawn"


def test_an_explorer_shows_its_widget_where_widgets_run_and_its_state_as_a_still_elsewhere():
    explorer = explorers.OperatingPointExplorer(PREDICTIONS, "COVID")
    bundle = explorer._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.widget.model_id
    still = bundle["text/html"]
    assert '<td class="cxr-sensitivity">0.667</td>' in still and '<img src="data:image/png;base64,iVBOR' in still


def test_every_explorer_displays_a_widget_view_in_a_kernel_on_the_installed_ipywidgets(toy_run, images):
    """As a notebook cell shows them: in a kernel, each explorer's output is a widget view and its still, no error
    (ipywidgets 7's widgets have no `_repr_mimebundle_`; `make test-colab` runs this on Colab's 7.7.1)."""
    import nbformat
    from nbclient import NotebookClient

    made = {
        "operating point": f"explorers.OperatingPointExplorer(pd.read_json(io.StringIO({PREDICTIONS.to_json()!r})))",
        "preprocessing": f"explorers.PreprocessingExplorer([{str(images['ramp'])!r}], sizes=(64,), size=64)",
        "radiograph": f"explorers.RadiographExplorer({str(toy_run.folder)!r}, {str(images['ramp'])!r})",
        "maps": f"explorers.MapExplorer({str(toy_run.folder)!r}, pd.DataFrame({{'path': [{str(images['ramp'])!r}], "
                f"'label': ['Normal']}}), layers=('toy1_out',))",
    }
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import io\nimport pandas as pd\nfrom helpers import explorers"),
        *(nbformat.v4.new_code_cell(code) for code in made.values())])
    NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    for name, cell in zip(made, notebook.cells[1:]):
        [output] = cell.outputs
        assert output.output_type == "execute_result", f"the {name} explorer: {output}"
        view = output.data["application/vnd.jupyter.widget-view+json"]
        assert view["version_major"] == 2 and view["model_id"], name
        assert 'class="cxr-' in output.data["text/html"], f"the {name} explorer's still"
