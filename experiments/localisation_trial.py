"""Do class activation maps localise after longer training? The improved recipe (random init) trained for more
epochs than the demo profile's 4 on its phantoms, and its maps scored against the phantoms' lesion and lung masks:
CAM at the last block and Grad-CAM at the two finer layers whose every cell is live, each beside what position alone
scores (the class-keeping null, and a fixed map per class learned from the training lesions).

First, with no model: how much position alone buys on these phantoms, on each map grid (4 × 4, 8 × 8, 16 × 16 at
128 px), for maps that never see a lesion: a random lung cell, a map of each cell's lung coverage, and one fixed cell
per class (the cell most often touched by that class's training lesions), each with its class-keeping null.
`--position-only` stops there (seconds, no training).

    python experiments/localisation_trial.py [--quick] [--epochs N] [--position-only]
"""

from __future__ import annotations

import os

import numpy as np
from common import parser, report


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--epochs", type=int, default=None)
    args.add_argument("--position-only", action="store_true", help="only what position alone scores (no training)")
    args = args.parse_args()
    os.environ.setdefault("CXR_PROFILE", "fast" if args.quick else "demo")
    epochs = args.epochs or (2 if args.quick else 10)

    import pandas as pd

    from helpers import cam, config, controls, data, datasets, recipes, runs, splits

    layout = datasets.phantom_dataset()
    scan = data.scan_cached(layout)
    split = splits.saved_split(scan)
    profile = config.active_profile()
    parts = {name: split[(split["split"] == name) & (split["repeat"] == 0)].merge(
        scan.index[["relpath", "mask_path", "lesion_mask_path"]], on="relpath") for name in ("train", "test")}
    position = position_alone(parts["train"], parts["test"], profile.image_size)
    print(f"Position alone: {profile.phantom_per_class} phantoms per class ({profile.phantom_size} px) at "
          f"{profile.image_size} px; fixed cells learned from the training lesions, scored on the test images with one")
    print(position.round(3).to_string())
    if args.position_only:
        report("position alone", {"quick": args.quick, "image_size": profile.image_size, "profile": profile.name,
                                  "pointing game": position.round(4).reset_index().to_dict(orient="records")})
        return

    run = runs.train_or_load(layout, recipes.IMPROVED, split, epochs=epochs, weights="none")
    test, training = run.part("test", scan), run.part("train", scan)
    localised = {}
    for name, layer in {"CAM, last block": None, "Grad-CAM conv4_block5_out": "conv4_block5_out",
                        "Grad-CAM conv3_block3_out": "conv3_block3_out"}.items():
        localised[name] = cam.localise(run, test, layer=layer, training=training)
    table = pd.DataFrame({name: found.overall for name, found in localised.items()}).T
    edited = controls.score_edits(run, test, controls.LUNG_CONTROLS)
    verdicts = edited.verdicts
    print(f"{run.folder}: improved recipe, random init, {epochs} epochs at {run.image_size} px, "
          f"profile {profile.name}; {len(test)} test images")
    print(table.round(3).to_string())
    for name, found in localised.items():
        print(found.describe(name))
        print(found.verdicts.round(3).to_string(), end="\n\n")
    print(edited.describe())
    print(verdicts.drop(columns="verdict").round(2).to_string())  # the verdicts are in describe()
    overall = edited.table.loc["all"]
    report("localisation", {"quick": args.quick, "epochs": epochs, "image_size": run.image_size,
                            "profile": profile.name, "test_images": len(test),
                            "maps": table.round(4).to_dict(orient="index"),
                            "lung_controls": {edit: {"accuracy": float(overall[(edit, "accuracy")]),
                                                     "informedness": float(overall[(edit, "informedness")])}
                                              for edit in ["as is", *controls.LUNG_CONTROLS]},
                            "verdicts": verdicts["verdict"].to_dict(),
                            "lesion verdicts": {name: {" / ".join(key): said for key, said in
                                                       found.verdicts["verdict"].items()}
                                                for name, found in localised.items()}})


def position_alone(train, test, size: int):
    """Per grid and class, the pointing game of maps that never see a lesion, on the test lesions: a random lung cell,
    each cell's lung coverage (a map that finds the lungs and nothing else), and the fixed cell of the class from the
    training lesions; the coverage map's and the fixed map's class-keeping nulls beside them (a fixed map's null equals
    its score, on average exactly: it is the same hits, counted against other images)."""
    import pandas as pd

    from helpers import cam

    test = test[test["lesion_mask_path"].notna()].reset_index(drop=True)
    lesions, lungs = cam.read_masks(test["lesion_mask_path"], size), cam.read_masks(test["mask_path"], size)
    with_lesion = lesions.any(axis=(1, 2))  # Normal phantoms have an empty lesion mask
    test, lesions, lungs = test[with_lesion].reset_index(drop=True), lesions[with_lesion], lungs[with_lesion]
    trained = train[train["lesion_mask_path"].notna()]
    train_lesions, train_labels = cam.read_masks(trained["lesion_mask_path"], size), trained["label"].to_numpy()
    labels, own, rows = test["label"].to_numpy(), np.arange(len(test)), []
    for cells in (4, 8, 16):
        grid = (cells, cells)
        coverage = _coverage(lungs, cells)  # each cell's lung share: it peaks where the lungs fill a cell
        fixed = cam.fixed_class_maps(train_lesions, train_labels, grid)
        fixed_maps = np.stack([fixed[label] for label in labels])
        measured = pd.DataFrame({"label": labels})
        measured["random lung cell"] = cam.pointing_game(coverage, lesions, lungs)[1]
        measured["lung coverage map"] = cam.pointing_game(coverage, lesions)[0]
        measured["coverage map: null"] = cam.pointing_null(coverage, labels, lesions, labels, own)
        measured["fixed cell (training)"] = cam.pointing_game(fixed_maps, lesions)[0]
        measured["fixed cell: null"] = cam.pointing_null(fixed_maps, labels, lesions, labels, own)
        for group, part in [*measured.groupby("label"), ("all", measured)]:
            rows.append({"grid": f"{cells}×{cells}", "class": group, "images": len(part),
                         **part.drop(columns="label").mean().to_dict()})
    return pd.DataFrame(rows).set_index(["grid", "class"])


def _coverage(masks, cells: int):
    """Masks (N, S, S) → (N, cells, cells): the share of each cell's pixels inside the mask."""
    n, size = masks.shape[0], masks.shape[1]
    edges = np.round(np.linspace(0, size, cells + 1)).astype(int)
    return np.array([[[masks[i, edges[r]:edges[r + 1], edges[c]:edges[c + 1]].mean() for c in range(cells)]
                      for r in range(cells)] for i in range(n)])

if __name__ == "__main__":
    main()
