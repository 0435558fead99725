"""Will it work in another hospital? COVID vs Normal, tested on a COVID collection never seen in training.

On phantoms whose collections draw in their own style (`collection_styles=True`) and on the same phantoms without
styles, a small model (logistic regression on 16 × 16 thumbnails, or with `--features resnet50` on the course's
ResNet50's pooled features) is trained twice for COVID vs Normal:

- held out: every COVID image of one collection is kept out of training and tested, against as many Normal images
  the model never saw;
- random: a test set of the same classes and sizes drawn from all collections (the usual split).

With Wilson 95% intervals on both accuracies. Then a "which collection?" probe: the same small model, cross-validated,
told to name the collection of each COVID image, against chance (always the largest collection). When the pixels
tell the collection, a class model can learn the collection: the held-out accuracy falls below the random one.
On the plain phantoms neither gap may appear: the test of the test. Verdicts are computed from the printed numbers.

    python experiments/held_out_source.py [--quick] [--per-class 150] [--size 128] [--features resnet50]

Measured (150 phantoms per class, 128 px, seed 0; COVID vs Normal, BIMCV held out; 95% Wilson intervals):

    styles   features    held out (n=150)        random split (n=150)    probe (chance 50.0%, n=150)
    with     thumbnails  50.0% [42.1%, 57.9%]    98.7% [95.3%, 99.6%]     99.3% [96.3%, 99.9%]
    with     resnet50*   50.0% [42.1%, 57.9%]    98.7% [95.3%, 99.6%]    100.0% [97.5%, 100.0%]
    without  thumbnails  98.7% [95.3%, 99.6%]    98.0% [94.3%, 99.3%]     30.0% [23.2%, 37.8%]
    without  resnet50*   98.7% [95.3%, 99.6%]    98.7% [95.3%, 99.6%]     29.3% [22.6%, 37.1%]

    4 classes (--task 4; the test: BIMCV's COVID images and as many unseen images of each other class, n=300)
    with     thumbnails  62.7% [57.1%, 67.9%]    85.7% [81.2%, 89.2%]
    without  thumbnails  77.0% [71.9%, 81.4%]    76.7% [71.6%, 81.1%]

(* random weights: ImageNet's were not reachable.) With styles, the other COVID collections held out in turn stay at
96-100% (2 classes): only BIMCV, the collection that looks like the Normal images' RSNA, falls, to 50% (every image
called Normal). With 4 classes the styles also raise the random split (76.7% → 85.7%): there the collection gives
the class away (Guangzhou: Viral Pneumonia; RSNA: Lung Opacity or Normal). The gap is planted, as a lesson: it shows
what the measurement finds when the pixels tell the collection.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.stats import binomtest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python experiments/held_out_source.py` from a checkout
    sys.path.insert(0, str(REPO))

from helpers.data import scan_dataset  # noqa: E402
from helpers.datasets import find_dataset  # noqa: E402
from helpers.sources import held_out_split, image_sources  # noqa: E402
from helpers.synthetic import ensure_phantoms  # noqa: E402
from helpers.tasks import CLASSES, TASK_CLASSES  # noqa: E402


def thumbnails(paths, size: int = 16) -> np.ndarray:
    """Each image shrunk to size × size grey levels in 0..1, one row per image: the small model's input."""
    return np.stack([np.asarray(Image.open(p).convert("L").resize((size, size), Image.BILINEAR),
                                dtype=np.float32).ravel() / 255 for p in paths])


def resnet50_features(paths, size: int = 128, weights: str = "imagenet") -> np.ndarray:
    """The course's ResNet50 backbone's pooled features (2,048 per image); random weights if ImageNet's are not
    reachable (said loudly by `load_backbone`)."""
    import keras

    from helpers.models import load_backbone

    backbone, _, _ = load_backbone(weights, size)
    pooled = keras.Sequential([backbone, keras.layers.GlobalAveragePooling2D()])
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)) for p in paths])
    return pooled.predict(keras.applications.resnet50.preprocess_input(images.astype(np.float32)), batch_size=32,
                          verbose=0)


FEATURES = {"thumbnails": thumbnails, "resnet50": resnet50_features}


def small_model():
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))


def wilson(correct: int, n: int, level: float = 0.95) -> tuple[float, float]:
    interval = binomtest(int(correct), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(interval.low), float(interval.high)


def accuracy(correct) -> dict:
    correct = np.asarray(correct, bool)
    low, high = wilson(correct.sum(), correct.size)
    return {"accuracy": float(correct.mean()), "low": low, "high": high, "n": int(correct.size)}


def held_out_vs_random(index: pd.DataFrame, features: pd.DataFrame, held_out: str, seed: int = 0) -> dict:
    """Accuracy (with its interval) of the small model on the held-out collection and on a random split, COVID
    against every other class of `index`; `features` has one row per row of `index` (same labels)."""
    result, others = {}, [c for c in CLASSES if c != "COVID" and (index["label"] == c).any()]
    for name, (train, test) in held_out_split(index, held_out, others=others, seed=seed).items():
        model = small_model().fit(features.loc[train.index], train["label"])
        result[name] = accuracy(model.predict(features.loc[test.index]) == test["label"].to_numpy())
    return result


def collection_probe(index: pd.DataFrame, features: pd.DataFrame, cls: str = "COVID") -> dict:
    """Cross-validated accuracy of naming the collection of `cls`'s images from their features, and chance."""
    rows = index[index["label"] == cls]
    folds = int(min(5, rows["source"].value_counts().min()))
    predicted = cross_val_predict(small_model(), features.loc[rows.index], rows["source"], cv=folds)
    return {**accuracy(predicted == rows["source"].to_numpy()),
            "chance": float(rows["source"].value_counts(normalize=True).max()),
            "collections": int(rows["source"].nunique())}


def verdicts(compared: dict, probe: dict) -> dict:
    """Plain-language conclusions, each decided by the intervals, never by the point estimates alone."""
    held, rand = compared["held_out"], compared["random"]
    if held["high"] < rand["low"]:
        split = "LOWER on the unseen collection: the random split overstates what the model does in another hospital"
    elif held["low"] > rand["high"]:
        split = "higher on the unseen collection (unexpected: look at what the collection changes)"
    else:
        split = "no measurable gap: the intervals overlap"
    tells = "the pixels TELL the collection" if probe["low"] > probe["chance"] + 0.1 else (
        "the pixels do not tell the collection beyond chance" if probe["low"] <= probe["chance"] else
        "the pixels tell the collection a little")
    return {"held_out_vs_random": split, "probe": tells}


def measure(root, held_out: str = "BIMCV", seed: int = 0, features: str = "thumbnails", task: int = 2) -> dict:
    """Held out vs random split, the probe and the verdicts, on the images of a dataset folder of the task's classes
    (2: COVID vs Normal; 3, 4); and the held-out accuracy of every COVID collection in turn (`each`)."""
    layout = find_dataset(root)
    sources = image_sources(scan_dataset(layout, progress=False).index, layout.root)
    index = sources.index[sources.index["label"].isin(TASK_CLASSES[task])]
    table = pd.DataFrame(FEATURES[features](index["path"]), index=index.index)
    compared = held_out_vs_random(index, table, held_out, seed=seed)
    probe = collection_probe(index, table)
    each = {c: held_out_vs_random(index, table, c, seed=seed)["held_out"]
            for c in sorted(set(index.loc[index["label"] == "COVID", "source"]))}
    return {"sources": sources.statement(), **compared, "probe": probe, "verdicts": verdicts(compared, probe),
            "each": each}


def _line(name, a) -> str:
    return f"  {name:<28} {a['accuracy']:6.1%}  [{a['low']:.1%}, {a['high']:.1%}]  n={a['n']}"


def main(argv=None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--quick", action="store_true", help="small sizes, to check the script runs (seconds)")
    args.add_argument("--per-class", type=int, default=150, help="phantoms per class (the demo profile's 150)")
    args.add_argument("--size", type=int, default=128, help="phantom size in pixels")
    args.add_argument("--held-out", default="BIMCV", help="the COVID collection never seen in training")
    args.add_argument("--features", choices=sorted(FEATURES), default="thumbnails", help="what the small model sees")
    args.add_argument("--task", type=int, choices=sorted(TASK_CLASSES), default=2, help="2: COVID vs Normal; 3; 4")
    args.add_argument("--out", default=str(REPO / "outputs" / "experiments" / "held_out_source"))
    options = args.parse_args(argv)
    per_class, size = (60, 64) if options.quick else (options.per_class, options.size)
    for styles in (True, False):
        root = ensure_phantoms(Path(options.out) / f"{size}px-{per_class}-styles-{styles}", per_class=per_class,
                               size=size, collection_styles=styles)
        result = measure(root, options.held_out, features=options.features, task=options.task)
        print(f"\nPhantoms {'WITH' if styles else 'WITHOUT'} collection styles ({per_class} per class, {size} px); "
              f"{' vs '.join(TASK_CLASSES[options.task])} on {options.features}, {options.held_out} held out. "
              f"{result['sources']}")
        print(_line(f"held out ({options.held_out})", result["held_out"]))
        print(_line("random split, same sizes", result["random"]))
        probe = result["probe"]
        print(_line(f"which collection? ({probe['collections']})", probe) + f"  chance {probe['chance']:.1%}")
        for name, verdict in result["verdicts"].items():
            print(f"  verdict, {name}: {verdict}")
        print("  each COVID collection held out in turn (the test: it and as many unseen images of each other class):")
        for name, held in result["each"].items():
            print(_line(f"  {name}", held))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
