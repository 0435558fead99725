"""The small library behind the COVID-19 chest X-ray course notebooks, so that the notebooks can show the ideas.
Every notebook starts with `course = helpers.start()` (course.py).

The lessons' modules, one per concern, each importing only those above it:
  config      run profiles (fast, demo, full), paths, the machine (CPU/GPU, Colab, Kaggle)
  files       atomic writes: a file is whole or absent
  recipes     training recipes (Paper A, improved, Paper B) as data
  tasks       the four classes, their folder names in every release, each task's classes
  image_files reading one image file: 8-bit grayscale from any mode, why it cannot be read, whether it is a radiograph
  synthetic   phantom radiographs in the real layout: lung and lesion masks, planted shortcuts, collections
  sources     where each image came from: the dataset's metadata sheets, read and matched
  datasets    which dataset and where it is: the real one (placed, downloaded, attached on Kaggle) or phantoms
  data        the scan of a dataset: every file decoded once (cached), its report, the index and its counts
  pipeline    the tf.data input pipeline (decode once, uint8 cache, flips, normalisation)
  models      ResNet heads, the backbone's weights, parameter tables, BatchNorm tools
  plots       figures, each captioned with the images and models it shows
  splits      seeded, duplicate-aware splits, saved under a key of what they were made from
  curves      held-out accuracy over training time: intervals, time to a threshold, what a held-out set can show
  runs        the course's runs, trained when missing, and `Run`: the door to the engine
  cam         class activation maps and Grad-CAM, and how well they localise
  controls    image-editing controls: the shortcut marker added, the lungs (or as big an edit outside them) hidden
  evaluation  metrics with intervals, calibration, paired tests, Paper A's Figure 2
  explorers   ipywidgets explorers over those functions (02 input, 03 upload, 04 operating point, 05 maps)
  timing      honest timing of input pipelines
  course      `helpers.start()`: every notebook's first call (device report, which dataset, a teacher's runs)
  cli         `python -m helpers`

engine/ holds the machinery (training loop and resume, callbacks, device policy and distribution, sharing, the run
folder's storage, locks, `make run`): not needed to teach, see its README.md.
"""

import os
import sys
import tempfile

# TensorFlow's C++ start-up chatter (oneDNN notes, CUDA probing, CPU instruction sets) buries what matters to a
# learner, and TF 2.16+ prints some of it before its own log level applies: import it with those lines held back.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_NOISE = ("absl::InitializeLog", "port.cc", "cudart_stub", "cpu_feature_guard", "To enable the following instructions",
          "cuda_dnn.cc", "cuda_fft.cc", "cuda_blas.cc", "cuInit", "computation_placer", "TF-TRT Warning",
          "Unable to register", "oneDNN custom operations")


def _import_tensorflow_quietly() -> None:
    if "tensorflow" in sys.modules:
        return
    try:
        saved = os.dup(2)
    except OSError:  # no stderr file descriptor (some embedded interpreters): import as is
        import tensorflow  # noqa: F401
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow
            tensorflow.config.list_physical_devices("GPU")  # CUDA probing prints here, once
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)
        lines = held.read().decode("utf-8", "replace").splitlines()
    kept = [line for line in lines if line.strip() and not any(noise in line for noise in _NOISE)]
    if kept:
        print("\n".join(kept), file=sys.stderr)


def _split_cpu_when_asked() -> None:
    """CXR_LOGICAL_DEVICES=N: the CPU as N logical devices, so that the course takes its several-GPU path
    (MirroredStrategy) without GPUs, for tests and for a learner who wants to see data parallelism. It must happen
    before TensorFlow runs anything, hence here; `devices.device_policy` reports a bad value or a late request."""
    import tensorflow as tf

    raw = os.environ.get("CXR_LOGICAL_DEVICES", "").strip()
    if not raw.isdigit() or int(raw) < 2 or tf.config.list_physical_devices("GPU"):
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * int(raw))
    except RuntimeError:  # TensorFlow already running in this process: the report says how many devices it has
        pass


_import_tensorflow_quietly()
_split_cpu_when_asked()

__version__ = "0.2.0"

from helpers.course import Course, start  # noqa: E402, F401  (after TensorFlow's quiet import)
