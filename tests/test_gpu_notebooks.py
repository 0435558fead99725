"""The notebooks that feed a model by hand, on runs trained as on a GPU. There the device policy makes models that
take uint8 grayscale pixels (S, S, 1) and normalise them themselves (CXR_UINT8_INPUTS, on by default with a GPU);
on the CPU they take normalised RGB. A learner meets either: a run trained on Colab, or a teacher's run imported on a
laptop. nbval runs the notebooks in the CPU's form; this test runs 03-05 in the GPU's (04's reshuffled evaluation
fed such a model /255 RGB images and stopped there)."""

from helpers.models import takes_pixels
from helpers.runs import Run
from tests.conftest import execute_notebook

FEEDING_A_MODEL = ["03_transfer_learning_resnet50.ipynb", "04_evaluation.ipynb", "05_class_activation_maps.ipynb"]


def test_the_notebooks_run_on_models_that_take_uint8_pixels_as_a_gpus_do(tmp_path, monkeypatch):
    outputs = tmp_path / "outputs"
    for name, value in {"CXR_FAST": "1", "CXR_EAGER": "1", "CXR_UINT8_INPUTS": "1",
                        "CXR_OUTPUT_DIR": str(outputs)}.items():
        monkeypatch.setenv(name, value)  # the kernels inherit them
    for name in FEEDING_A_MODEL:  # in order, in one output folder: 04 and 05 use the runs 03 trained
        printed = execute_notebook(name, timeout=900)
        assert "uint8 inputs, normalised in the model" in printed, f"{name} did not run under the GPU's input form"
    trained = [Run(settings.parent) for settings in sorted(outputs.glob("runs/**/settings.json"))]
    assert trained and all(takes_pixels(run.model) for run in trained), \
        "every run the notebooks trained takes uint8 pixels"
