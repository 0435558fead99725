"""Command line: `python -m helpers …` calls the same functions as the notebooks.

  python -m helpers profile [--json]
  python -m helpers data check ROOT [--json] [--task 4|3|2]
  python -m helpers data synth OUT --per-class N --size S --seed K [--shortcut CLASS]
  python -m helpers data split ROOT --mode paper_a|paper_b --task 4|3|2 --out CSV
  python -m helpers data download
  python -m helpers model --recipe paper_a --task 4 --weights none
  python -m helpers train --data ROOT --recipe paper_a|improved --task 4 --out RUN_DIR [--epochs N]
  python -m helpers predict IMAGE... --run RUN_DIR [--json] [--cam OUT_DIR]
  python -m helpers evaluate --run RUN_DIR [--json]
  python -m helpers links [--check]          (Colab badges and setup cells → config.REPOSITORY)
  python -m helpers run                      (the main job: data, splits, then every notebook)
"""

from __future__ import annotations

import argparse
import json
import sys

from helpers import config
from helpers.data import CLASSES, TASK_CLASSES, DatasetError
from helpers.recipes import RECIPES


def _cmd_profile(args) -> int:
    profile = config.choose_profile()
    print(profile.to_json() if args.json else profile.describe())
    return 0


def _cmd_check(args) -> int:
    from helpers.data import find_dataset, format_report, scan_dataset

    try:
        scan = scan_dataset(find_dataset(args.root, classes=TASK_CLASSES[args.task]),
                            progress=not args.json and sys.stderr.isatty())
    except DatasetError as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(scan.to_dict(), indent=2) if args.json else format_report(scan))
    return 0


def _cmd_synth(args) -> int:
    from helpers.synthetic import generate_phantoms

    root = generate_phantoms(args.out, per_class=args.per_class, size=args.size, seed=args.seed,
                             shortcut_class=args.shortcut, shortcut_rate=args.shortcut_rate)
    print(f"Wrote {args.per_class} phantom radiographs per class ({args.size} px, seed {args.seed}) "
          f"to {root}")
    return 0


def _cmd_split(args) -> int:
    from helpers.data import find_dataset, scan_dataset
    from helpers.splits import make_split, save_split, split_summary

    options = {}
    if args.mode == "paper_b":
        options = {"n_per_class": args.n_per_class, "repeats": args.repeats}
    try:
        scan = scan_dataset(find_dataset(args.root, classes=TASK_CLASSES[args.task]))
        split = make_split(scan.index, mode=args.mode, task=args.task, seed=args.seed, **options)
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    save_split(split, args.out)
    print(split_summary(split).to_string())
    print(f"Saved to {args.out}")
    return 0


def _cmd_download(args) -> int:
    from helpers.data import download_dataset

    try:
        root = download_dataset()
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Dataset ready at {root}")
    return 0


def _cmd_run(args) -> int:
    from helpers.course import run_course

    try:
        run_course()
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_links(args) -> int:
    from helpers.course import sync_links

    changed = sync_links(write=not args.check)
    for path in changed:
        print(f"{'out of date' if args.check else 'updated'}: {path}")
    if args.check and changed:
        print(f"error: links do not point at {config.REPOSITORY}; run python -m helpers links",
              file=sys.stderr)
        return 1
    print(f"Colab badges and setup cells point at {config.REPOSITORY}")
    return 0


def _cmd_model(args) -> int:
    from helpers.models import PAPER_A_TABLE_1, build_model, format_parameter_table, parameter_table
    from helpers.recipes import get_recipe

    recipe = get_recipe(args.recipe)
    try:
        model, weights_used, _ = build_model(recipe.head, len(TASK_CLASSES[args.task]),
                                             args.image_size or recipe.image_size, args.weights, recipe.dropout,
                                             backbone=recipe.backbone)
    except (ImportError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Recipe {recipe.name}, {args.task} classes, {recipe.backbone} backbone weights: {weights_used}")
    print(format_parameter_table(parameter_table(model)))
    if recipe.head == "paper_a":
        print(f"\nPaper A's Table 1 gives {PAPER_A_TABLE_1['dense_1024']:,} for the Dense(1024) layer; a Dense "
              "layer on ResNet50's 2048 pooled features has 2048 × 1024 + 1024 = 2,098,176.")
    return 0


def _cmd_train(args) -> int:
    from helpers.training import RunSettingsError, train_run

    try:
        settings = train_run(args.out, args.data, recipe=args.recipe, task=args.task, epochs=args.epochs,
                             image_size=args.image_size, batch_size=args.batch_size, weights=args.weights,
                             seed=args.seed, split_mode=args.split, repeat=args.repeat)
    except (DatasetError, RunSettingsError, ValueError, FileNotFoundError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    monitored = {"val": "validation", "test": "test (monitored only)"}[settings["monitored_on"]]
    print(f"Trained {settings['recipe']} ({'pretrained' if settings['pretrained'] else 'RANDOM-INIT'} backbone) "
          f"for {settings['epochs_run']} epochs: {monitored} accuracy {settings['validation']['accuracy']:.3f}, "
          f"loss {settings['validation']['loss']:.3f} → {args.out}")
    return 0


def _cmd_predict(args) -> int:
    from helpers.runs import RunNotFoundError, format_predictions, load_model, predict_images, read_settings

    try:
        classes, model = read_settings(args.run)["classes"], load_model(args.run)
        table = predict_images(args.run, args.images, model=model)
        if args.cam:
            from helpers.cam import write_overlays

            overlays = write_overlays(args.run, args.images, args.cam, args.cam_method, args.cam_layer, model)
            table["overlay"] = overlays["overlay"].to_numpy()
    except (RunNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        rows = []
        for _, row in table.iterrows():
            failed = isinstance(row["error"], str)
            rows.append({"image": row["image"], "error": row["error"] if failed else None,
                         "predicted": None if failed else row["predicted"],
                         "probabilities": None if failed else {c: round(float(row[c]), 6) for c in classes}})
            if args.cam:
                rows[-1]["overlay"] = row["overlay"] if isinstance(row["overlay"], str) else None
        print(json.dumps(rows, indent=2))
    else:
        print(format_predictions(table, classes))
        if args.cam:
            written = table["overlay"].notna().sum()
            print(f"\n{written} overlay(s) written to {args.cam} (the map of every class over each image)")
    return 1 if table["error"].map(lambda e: isinstance(e, str)).any() else 0


def _cmd_evaluate(args) -> int:
    from helpers.evaluation import evaluate_run, format_metrics
    from helpers.runs import RunNotFoundError

    try:
        metrics = evaluate_run(args.run, n_resamples=args.resamples, figures=not args.no_figures)
    except (RunNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2) if args.json else format_metrics(metrics))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    profile = commands.add_parser("profile", help="print the active run profile and why it was chosen")
    profile.add_argument("--json", action="store_true")
    profile.set_defaults(func=_cmd_profile)

    data = commands.add_parser("data", help="check, generate, split or download the dataset")
    data_commands = data.add_subparsers(dest="data_command", required=True)

    check = data_commands.add_parser("check", help="scan every file and report what is usable")
    check.add_argument("root", help="folder holding the dataset (any level above the class folders)")
    check.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    check.add_argument("--task", type=int, choices=sorted(TASK_CLASSES), default=4,
                       help="number of classes that must be present (default 4)")
    check.set_defaults(func=_cmd_check)

    synth = data_commands.add_parser("synth", help="generate phantom radiographs in the real layout")
    synth.add_argument("out")
    synth.add_argument("--per-class", type=int, default=250)
    synth.add_argument("--size", type=int, default=299)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--shortcut", choices=CLASSES, default=None,
                       help="plant a corner marker on this class's images")
    synth.add_argument("--shortcut-rate", type=float, default=1.0,
                       help="fraction of that class's images that carry the marker")
    synth.set_defaults(func=_cmd_synth)

    split = data_commands.add_parser("split", help="make and save a seeded, duplicate-aware split")
    split.add_argument("root")
    split.add_argument("--mode", choices=("paper_a", "paper_b"), default="paper_a")
    split.add_argument("--task", type=int, choices=sorted(TASK_CLASSES), default=4)
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--n-per-class", type=int, default=None, help="paper_b: images per class")
    split.add_argument("--repeats", type=int, default=3, help="paper_b: number of sub-samples")
    split.add_argument("--out", required=True, help="CSV file to write")
    split.set_defaults(func=_cmd_split)

    download = data_commands.add_parser("download", help="download the dataset through kagglehub")
    download.set_defaults(func=_cmd_download)

    model = commands.add_parser("model", help="build a recipe's model and print its parameter table")
    model.add_argument("--recipe", choices=sorted(RECIPES), default="paper_a")
    model.add_argument("--task", type=int, choices=sorted(TASK_CLASSES), default=4)
    model.add_argument("--image-size", type=int, default=None, help="default: the recipe's")
    model.add_argument("--weights", default="imagenet", help="imagenet, none, or a weights file")
    model.set_defaults(func=_cmd_model)

    train = commands.add_parser("train", help="train a recipe into a run folder (re-run to resume)")
    train.add_argument("--data", required=True, help="folder holding the dataset")
    train.add_argument("--recipe", choices=sorted(RECIPES), default="paper_a")
    train.add_argument("--task", type=int, choices=sorted(TASK_CLASSES), default=4)
    train.add_argument("--out", required=True, help="run folder to write (or resume)")
    train.add_argument("--epochs", type=int, default=None, help="default: the recipe's, capped by the profile")
    train.add_argument("--image-size", type=int, default=None, help="default: the recipe's, capped by the profile")
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--weights", default=None, help="imagenet, none, or a weights file (default: profile's)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--split", choices=("paper_a", "paper_b"), default="paper_a",
                       help="paper_a: train/val/test; paper_b: a balanced sub-sample, 90/10 (with --recipe paper_b)")
    train.add_argument("--repeat", type=int, default=0, help="paper_b: which sub-sample (0, 1, 2)")
    train.set_defaults(func=_cmd_train)

    predict = commands.add_parser("predict", help="class probabilities for images, with a trained run")
    predict.add_argument("images", nargs="+")
    predict.add_argument("--run", required=True, help="run folder made by `train`")
    predict.add_argument("--json", action="store_true")
    predict.add_argument("--cam", metavar="OUT_DIR", help="also write one overlay PNG per image: every class's map")
    predict.add_argument("--cam-method", choices=("auto", "cam", "gradcam"), default="auto",
                         help="auto: CAM for a linear head (Paper B), else Grad-CAM")
    predict.add_argument("--cam-layer", default=None,
                         help="Grad-CAM at this layer, e.g. conv4_block6_out for finer maps (default: last block)")
    predict.set_defaults(func=_cmd_predict)

    evaluate = commands.add_parser("evaluate", help="metrics of a trained run on its test split")
    evaluate.add_argument("--run", required=True, help="run folder made by `train`")
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    evaluate.add_argument("--no-figures", action="store_true")
    evaluate.set_defaults(func=_cmd_evaluate)

    links = commands.add_parser("links", help="point Colab badges and setup cells at config.REPOSITORY")
    links.add_argument("--check", action="store_true", help="only report files that are out of date")
    links.set_defaults(func=_cmd_links)

    run = commands.add_parser("run", help="the main job: data check, splits, then every notebook")
    run.set_defaults(func=_cmd_run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
