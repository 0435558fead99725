"""BatchNorm after short from-scratch training: what a faster moving-average momentum and re-estimating the
statistics after training each do to validation and test accuracy.

A random-init ResNet50 (linear head, Adam 1e-3, flips; the improved recipe's from-scratch settings) is trained twice
on the demo profile's phantoms, once with Keras' default BatchNorm momentum (0.99) and once with 0.9; each is then
evaluated with its moving statistics as trained, and again after re-estimating them on the training images.

    python experiments/batchnorm_trial.py [--quick] [--epochs N]
"""

from __future__ import annotations

from common import parser, report


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--epochs", type=int, default=None)
    args = args.parse_args()
    size, epochs, per_class = (64, 2, 30) if args.quick else (128, 6, 150)
    epochs = args.epochs or epochs

    import keras
    import pandas as pd

    from helpers import config, data, datasets, models, pipeline, splits, synthetic, tasks

    root = synthetic.ensure_phantoms(config.PHANTOM_DIR / f"299px-{per_class}-per-class", per_class=per_class, size=299)
    scan = data.scan_cached(datasets.find_dataset(root))
    split = splits.make_split(scan.index, mode="paper_a", task=4, seed=0)
    split["path"] = [str(scan.layout.root / p) for p in split["relpath"]]
    parts = pipeline.datasets_from_split(split, tasks.CLASSES, size, 32, flip=True, normalisation="resnet50")
    train_rows = split[split["split"] == "train"]
    reference = pipeline.build_dataset(train_rows["path"], train_rows["label"].map(tasks.CLASSES.index), 4, size, 32)
    rows = []
    for momentum in (0.99, 0.9):
        keras.utils.set_random_seed(0)
        model = models.build_model("linear", 4, size, "none", dropout=0.2).model
        models.set_batchnorm_momentum(model, momentum)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(parts["train"], validation_data=parts["val"], epochs=epochs, verbose=2)
        for reestimated in (False, True):
            if reestimated:
                models.reestimate_batchnorm(model, reference)
            rows.append({"momentum": momentum, "statistics": "re-estimated" if reestimated else "as trained",
                         "train accuracy (last epoch)": history.history["accuracy"][-1],
                         "val accuracy": model.evaluate(parts["val"], verbose=0, return_dict=True)["accuracy"],
                         "test accuracy": model.evaluate(parts["test"], verbose=0, return_dict=True)["accuracy"]})
    table = pd.DataFrame(rows)
    print(f"{per_class} phantoms per class (299 px) at {size} px, random-init ResNet50, {epochs} epochs:")
    print(table.round(3).to_string(index=False))
    report("batchnorm", {"quick": args.quick, "image_size": size, "epochs": epochs, "per_class": per_class,
                         "rows": table.round(4).to_dict(orient="records")})


if __name__ == "__main__":
    main()
