"""Do class activation maps localise after longer training? The improved recipe (random init) trained for more
epochs than the demo profile's 4 on its phantoms, and its maps scored against the phantoms' lesion and lung masks:
CAM at the last block and Grad-CAM at the two finer layers whose every cell is live.

    python experiments/localisation_trial.py [--quick] [--epochs N]
"""

from __future__ import annotations

import os

from common import parser, report


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--epochs", type=int, default=None)
    args = args.parse_args()
    os.environ.setdefault("CXR_PROFILE", "fast" if args.quick else "demo")
    epochs = args.epochs or (2 if args.quick else 10)

    import pandas as pd

    from helpers import cam, config, controls, data, datasets, recipes, runs, splits

    layout = datasets.phantom_dataset()
    scan = data.scan_cached(layout)
    split = splits.saved_split(scan)
    run = runs.train_or_load(layout, recipes.IMPROVED, split, epochs=epochs, weights="none")
    test = run.part("test", scan)
    localised = {}
    for name, layer in {"CAM, last block": None, "Grad-CAM conv4_block5_out": "conv4_block5_out",
                        "Grad-CAM conv3_block3_out": "conv3_block3_out"}.items():
        localised[name] = cam.localise(run, test, layer=layer)
    table = pd.DataFrame({name: found.overall for name, found in localised.items()}).T
    edited = controls.score_edits(run, test, controls.LUNG_CONTROLS)
    verdicts = edited.verdicts
    profile = config.active_profile()
    print(f"{run.folder}: improved recipe, random init, {epochs} epochs at {run.image_size} px, "
          f"profile {profile.name}; {len(test)} test images")
    print(table.round(3).to_string())
    for name, found in localised.items():
        print(found.describe(name), end="\n\n")
    print(edited.describe())
    print(verdicts.drop(columns="verdict").round(2).to_string())  # the verdicts are in describe()
    overall = edited.table.loc["all"]
    report("localisation", {"quick": args.quick, "epochs": epochs, "image_size": run.image_size,
                            "profile": profile.name, "test_images": len(test),
                            "maps": table.round(4).to_dict(orient="index"),
                            "lung_controls": {edit: {"accuracy": float(overall[(edit, "accuracy")]),
                                                     "informedness": float(overall[(edit, "informedness")])}
                                              for edit in ["as is", *controls.LUNG_CONTROLS]},
                            "verdicts": verdicts["verdict"].to_dict()})

if __name__ == "__main__":
    main()
