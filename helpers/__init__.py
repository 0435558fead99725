"""The small library behind the COVID-19 chest X-ray course notebooks.

One module per concern: `config` (run profiles), `data` (finding, checking and indexing the dataset),
`synthetic` (phantom radiographs), `splits` (seeded duplicate-aware splits), `pipeline` (tf.data input),
`models` (ResNet50 heads), `recipes` (Paper A, improved, Paper B), `training` (resumable runs), `runs`
(loading and predicting), `evaluation` (metrics, calibration, controls), `cam` (class activation maps and
how well they localise), `plots`, `timing`, `course` (what the notebooks and the main job share), `cli`
(python -m helpers).
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, CPU instruction notes) buries what matters to a learner.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
