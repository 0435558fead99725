"""Which epoch should a random-init run keep? Per epoch, the validation figures with BatchNorm statistics as trained
and re-estimated (what the saved model will use), the test figures of the re-estimated model, and the epoch each
selection criterion keeps (issue 35).

Paper A's and the improved recipe are trained as notebook 03 trains them (its split, the active dataset: phantoms
without the real one), each from its first epoch, in the demo profile unless CXR_PROFILE says otherwise. After every
epoch the re-estimated model is also scored on the test part, which selects nothing: it only says what each choice
would have given.

    CXR_PROFILE=demo python experiments/kept_epoch_trial.py [--quick] [--epochs N] [--seed S]
"""

from __future__ import annotations

import os
import shutil

from common import parser, report


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the profile's)")
    args.add_argument("--seed", type=int, default=0)
    args = args.parse_args()
    os.environ["CXR_PROFILE"] = "fast" if args.quick else os.environ.get("CXR_PROFILE", "demo")

    import keras
    import pandas as pd

    from helpers import config, data, datasets, recipes, splits, training
    from helpers.pipeline import datasets_from_split

    layout = datasets.active_dataset()
    split = splits.saved_split(data.scan_cached(layout), mode="paper_a", task=4)
    rows, kept = [], {}
    for recipe in (recipes.IMPROVED, recipes.PAPER_A):
        folder = (config.OUTPUT_DIR / "kept_epoch_trial"
                  / f"{recipe.name}_{config.active_profile().name}_seed{args.seed}")
        shutil.rmtree(folder, ignore_errors=True)  # always trained afresh: the figures are this run's
        scores = []

        class ScoreTest(keras.callbacks.Callback):  # after ValidateAsSaved: the statistics the epoch is saved with
            def __init__(self, recipe, scores):
                super().__init__()
                self.recipe, self.scores = recipe, scores

            def on_epoch_end(self, epoch, logs=None):
                test = datasets_from_split(split, layout.classes, self.model.input_shape[1], 32,
                                           normalisation=self.recipe.normalisation)["test"]
                self.scores.append(self.model.evaluate(test, verbose=0, return_dict=True))
                print(f"\n{self.recipe.name} epoch {epoch + 1}: val loss {logs['val_loss']:.3f} (as trained "
                      f"{logs['val_loss_as_trained']:.3f}), val balanced accuracy {logs['val_balanced_accuracy']:.3f}, "
                      f"test balanced accuracy {self.scores[-1]['balanced_accuracy']:.3f}", flush=True)

        run = training.train(folder, split, recipe, layout.classes, layout.root, epochs=args.epochs, seed=args.seed,
                             callbacks=[ScoreTest(recipe, scores)])
        history = run.history()
        table = pd.DataFrame({
            "recipe": recipe.name, "epoch": history["epoch"] + 1,
            "val loss as trained": history["val_loss_as_trained"],
            "val loss re-estimated": history["val_loss"],
            "val bal. acc. as trained": history["val_balanced_accuracy_as_trained"],
            "val bal. acc. re-estimated": history["val_balanced_accuracy"],
            "test loss re-estimated": [s["loss"] for s in scores],
            "test bal. acc. re-estimated": [s["balanced_accuracy"] for s in scores],
            "train s": history["train_seconds"].diff().fillna(history["train_seconds"]),
            "re-estimation s": history["reestimation_seconds"],
        })
        rows.append(table)
        kept[recipe.name] = {  # 1-based epochs; ties go to the earliest, as the course's selection does
            "lowest val loss as trained (before issue 35)": int(table["val loss as trained"].idxmin()) + 1,
            "lowest val loss re-estimated": int(table["val loss re-estimated"].idxmin()) + 1,
            "highest val balanced accuracy re-estimated": int(table["val bal. acc. re-estimated"].idxmax()) + 1,
        }
    table = pd.concat(rows, ignore_index=True)
    print(f"{config.active_profile().name} profile, images in {layout.root}:")
    print(table.round(3).to_string(index=False))
    print(pd.DataFrame(kept).to_string())
    report("kept_epoch", {"quick": args.quick, "seed": args.seed, "profile": config.active_profile().name,
                          "rows": table.round(4).to_dict(orient="records"), "kept": kept})


if __name__ == "__main__":
    main()
