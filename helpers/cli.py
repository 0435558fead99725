"""Command line: `python -m helpers …` calls the same functions as the notebooks.

  python -m helpers profile [--json]          (the run profile and the device policy)
  python -m helpers data check ROOT [--json] [--task 4|3|2]
  python -m helpers data synth OUT --per-class N --size S --seed K [--shortcut CLASS]
  python -m helpers data split ROOT --mode paper_a|paper_b --task 4|3|2 --out CSV
  python -m helpers data download
  python -m helpers model --recipe paper_a --task 4 --weights none
  python -m helpers train --data ROOT --recipe paper_a|improved|paper_b --task 4 --out RUN_DIR [--epochs N]
                    [--per-class N] [--profile fast|demo|full]   (default: every usable image)
  python -m helpers predict IMAGE... --run RUN_DIR [--json] [--cam OUT_DIR]
  python -m helpers evaluate --run RUN_DIR [--json]
  python -m helpers run                      (the main job: data, splits, then every notebook)
  python -m helpers run export RUN_DIR ARCHIVE.zip       (finished runs, with a manifest of their hashes)
  python -m helpers run import ARCHIVE_OR_URL [--out RUN_DIR] [--data ROOT]

Every failure is one line on stderr saying what failed and where (exit code 2), never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import tensorflow as tf

from helpers import config, datasets
from helpers.cam import FINER_LAYERS, METHODS, write_overlays
from helpers.data import format_report, scan_cached, scan_dataset
from helpers.datasets import DatasetError, download_dataset, find_dataset
from helpers.engine import devices, distribute, sharing
from helpers.engine.main_job import run_course
from helpers.engine.resume import RunSettingsError
from helpers.engine.storage import RunNotFoundError
from helpers.engine.training import TrainingInterrupted, train
from helpers.evaluation import evaluate_run
from helpers.image_files import radiograph_doubt
from helpers.models import PAPER_A_TABLE_1, build_model, format_parameter_table, parameter_table
from helpers.recipes import RECIPES, get_recipe
from helpers.runs import Run, format_predictions
from helpers.sources import image_sources
from helpers.splits import make_split, sample_distinct, save_split, saved_split, split_plan, split_summary
from helpers.synthetic import generate_phantoms
from helpers.tasks import CLASSES, TASK_CLASSES, task_classes

# What the CLI reports as one line: the user's input, the data or the disk, not a bug in the course.
EXPECTED_ERRORS = (DatasetError, RunSettingsError, RunNotFoundError, distribute.StrategyError, ValueError, ImportError,
                   OSError)


def _cmd_profile(args) -> int:
    profile, policy = config.choose_profile(), devices.device_policy()
    if args.json:
        print(json.dumps({**json.loads(profile.to_json()), "device_policy": policy.to_dict()}))
    else:
        print(f"{profile.describe()}\ntraining device policy: {policy.reason}")
    return 0


def _cmd_check(args) -> int:
    try:
        scan = scan_dataset(find_dataset(args.root, classes=TASK_CLASSES[args.task]),
                            progress=not args.json and sys.stderr.isatty())
    except DatasetError as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        raise

    sources = image_sources(scan.index, scan.layout.root)
    if args.json:
        print(json.dumps({**scan.to_dict(), "sources": sources.to_dict()}, indent=2))
    else:
        print(format_report(scan, sources))
    return 0


def _cmd_synth(args) -> int:
    root = generate_phantoms(args.out, per_class=args.per_class, size=args.size, seed=args.seed,
                             shortcut_class=args.shortcut, shortcut_rate=args.shortcut_rate)
    print(f"Wrote {args.per_class} phantom radiographs per class ({args.size} px, seed {args.seed}) to {root}")
    return 0


def _cmd_split(args) -> int:
    options = {"n_per_class": args.n_per_class, "repeats": args.repeats} if args.mode == "paper_b" else {}
    scan = scan_dataset(find_dataset(args.root, classes=TASK_CLASSES[args.task]))
    split = make_split(scan.index, mode=args.mode, task=args.task, seed=args.seed, **options)
    save_split(split, args.out)
    print(split_summary(split).to_string())
    print(f"Saved to {args.out}")
    return 0


def _cmd_download(args) -> int:
    print(f"Dataset ready at {download_dataset()}")
    return 0


def _cmd_run(args) -> int:
    run_course()
    return 0


def _cmd_export(args) -> int:
    try:
        manifest = sharing.export_runs(args.run_dir, args.archive)
    except sharing.ExportInterrupted as exc:  # SIGTERM or Ctrl-C: the partial archive is gone, one line says so
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    print(f"Exported {len(manifest['runs'])} run(s) to {args.archive}: "
          + ", ".join(run["folder"] for run in manifest["runs"]))
    return 0


def _cmd_import(args) -> int:
    layout = find_dataset(args.data) if args.data else datasets.active_dataset(quiet=True)
    sharing.import_runs(args.archive, layout, out=args.out)
    return 0


def _cmd_model(args) -> int:
    recipe = get_recipe(args.recipe)
    built = build_model(recipe.head, len(TASK_CLASSES[args.task]), args.image_size or recipe.image_size,
                        args.weights, recipe.dropout, backbone=recipe.backbone)
    print(f"Recipe {recipe.name}, {args.task} classes, {recipe.backbone} backbone weights: {built.weights_used}")
    print(format_parameter_table(parameter_table(built.model)))
    if recipe.head == "paper_a":
        print(f"\nPaper A's Table 1 gives {PAPER_A_TABLE_1['dense_1024']:,} for the Dense(1024) layer; a Dense "
              "layer on ResNet50's 2048 pooled features has 2048 × 1024 + 1024 = 2,098,176.")
    return 0


def _cmd_train(args) -> int:
    if args.profile:  # before anything reads the profile: training's sizes follow it too
        config.use_profile(args.profile)
    distribute.strategy_for(devices.device_policy())  # before anything else runs TensorFlow (several workers)
    recipe = get_recipe(args.recipe)
    layout = find_dataset(args.data, classes=task_classes(args.task))
    scan = scan_cached(layout)
    split, used = planned_split(scan, args)
    print(used["statement"], flush=True)
    run = Run(args.out, train(args.out, split, recipe, task_classes(args.task), layout.root, repeat=args.repeat,
                              epochs=args.epochs, image_size=args.image_size, batch_size=args.batch_size,
                              weights=args.weights, seed=args.seed, skipped=scan.skipped, record={"data_used": used}))
    if not run.finished:  # a worker other than the chief: the chief reports the run
        return 0
    part, score = run.monitored_on, run.score
    print(f"Trained {recipe.name} ({'pretrained' if run.pretrained else 'RANDOM-INIT'} backbone) for "
          f"{run.epochs_run} epochs: {'validation' if part == 'val' else 'test (watched only)'} accuracy "
          f"{score['accuracy']:.3f}, loss {score['loss']:.3f} → {args.out}")
    return 0


def data_cap(args, profile: config.Profile, is_phantom: bool, env=None) -> tuple[int, str | None, str | None]:
    """(images per class, 0 for every one; why; how to change it) for `train`'s split.

    A profile's caps exist so that a notebook on a CPU finishes: the command line uses every usable image (Paper B:
    the paper's 900 in all) unless --per-class, CXR_REAL_PER_CLASS / CXR_SUBSAMPLE_PER_CLASS, or a profile someone
    named (--profile, CXR_PROFILE, CXR_FAST) asks for fewer. A phantom set is already the profile's size."""
    env = os.environ if env is None else env
    field, var = (("subsample_per_class", "CXR_SUBSAMPLE_PER_CLASS") if args.split == "paper_b"
                  else ("real_per_class", "CXR_REAL_PER_CLASS"))
    named = f"--profile {args.profile}" if args.profile else config.profile_named(env)
    if args.per_class is not None:
        every = "the paper's 900 in all" if args.split == "paper_b" else "every image"
        return args.per_class, f"--per-class {args.per_class}", f"--per-class 0 for {every}"
    if is_phantom and args.split == "paper_a":
        return 0, None, None
    if env.get(var, "").strip():
        return getattr(profile, field), f"{var}={env[var].strip()}", f"unset {var} or pass --per-class N to change it"
    if named and getattr(profile, field):
        return (getattr(profile, field), f"the {profile.name} profile's cap, {named}",
                "--per-class N or --profile full to change it")
    return 0, None, None


def planned_split(scan, args, env=None) -> tuple:
    """(split, what was asked and used) for `train`: the course's saved split of every usable image of the task, or
    of the sample asked for; the record's statement, printed first, says which with the numbers and the override."""
    profile = config.active_profile()
    classes = task_classes(args.task)
    usable = scan.index[scan.index["label"].isin(classes)]
    cap, why, change = data_cap(args, profile, scan.layout.is_phantom, env)
    if args.split == "paper_b":
        planned = dataclasses.replace(profile, subsample_per_class=cap)
    else:
        planned = dataclasses.replace(profile, real_per_class=cap)
        if cap and scan.layout.is_phantom:  # the saved split never samples a phantom set: sample it here
            scan = dataclasses.replace(scan, index=sample_distinct(usable, cap, args.seed))
    plan = split_plan(scan, args.split, args.task, planned)
    split = saved_split(scan, mode=args.split, task=args.task, seed=args.seed, profile=planned)
    counts = {c: int(n) for c, n in usable["label"].value_counts().reindex(classes, fill_value=0).items()}
    used = int((split["repeat"] == args.repeat).sum())
    of = f"of {datasets.counts_text(counts)} usable"
    if args.split == "paper_b":
        wanted = cap or 900 // len(classes)
        short = (f"; only {plan['n_per_class']} distinct images in the smallest class, so {plan['n_per_class']}"
                 if plan["n_per_class"] < wanted else "")
        why, change = why or "the paper's 900 in all", change or "--per-class N to change it"
        statement = (f"Using Paper B's sub-samples of {wanted} images per class{short} ({plan['repeats']} repeats, "
                     f"{used:,} images in repeat {args.repeat}) {of} ({why}; {change})")
    elif cap:
        fewer = "".join(f"; every one of {c}'s {n:,}" for c, n in counts.items() if n < cap)
        statement = f"Using {cap} images per class ({used:,} in all{fewer}) {of} ({why}; {change})"
    else:
        ignored = (f"; the {profile.name} profile's cap of {profile.real_per_class} per class is for notebooks on a "
                   "CPU" if profile.real_per_class and not scan.layout.is_phantom else "")
        statement = (f"Using every usable image: {datasets.counts_text(counts)}{ignored}; --per-class N to sample N "
                     "per class")
    return split, {"per_class_asked": args.per_class, "profile_asked": args.profile,
                   "profile_named": f"--profile {args.profile}" if args.profile else config.profile_named(env),
                   "cap": why, "per_class_used": cap or None, "plan": plan, "images_usable": int(len(usable)),
                   "images_used": used, "statement": statement}


def _doubts(paths) -> dict:
    """Per readable image, why it looks nothing like a chest radiograph (if it does not)."""
    return {str(path): reason for path in paths if (reason := radiograph_doubt(path))}


def _cmd_predict(args) -> int:
    run = Run(args.run)
    table = run.predict(args.images)
    if args.cam:
        table["overlay"] = write_overlays(run, args.images, args.cam, args.cam_method, args.cam_layer)["overlay"]
    doubts = _doubts(args.images)
    for path, reason in doubts.items():
        print(f"warning: {path} {reason}: far from a chest radiograph, so its probabilities mean nothing",
              file=sys.stderr)
    if args.json:
        rows = []
        for _, row in table.iterrows():
            failed = isinstance(row["error"], str)
            rows.append({"image": row["image"], "error": row["error"] if failed else None,
                         "predicted": None if failed else row["predicted"],
                         "probabilities": None if failed else {c: round(float(row[c]), 6) for c in run.classes},
                         "warning": doubts.get(row["image"])})
            if args.cam:
                rows[-1]["overlay"] = row["overlay"] if isinstance(row["overlay"], str) else None
        print(json.dumps(rows, indent=2))
    else:
        print(format_predictions(table, run.classes))
        if args.cam:
            print(f"\n{table['overlay'].notna().sum()} overlay(s) written to {args.cam} (the map of every class "
                  "over each image)")
    return 1 if table["error"].map(lambda e: isinstance(e, str)).any() else 0


def _cmd_evaluate(args) -> int:
    metrics = evaluate_run(args.run, n_resamples=args.resamples, figures=not args.no_figures, progress=not args.json,
                           again=True)
    print(json.dumps(metrics.as_dict(), indent=2) if args.json else metrics)
    return 0


def _whole_number(text: str, lowest: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, found {text!r}") from None
    if value < lowest:
        raise argparse.ArgumentTypeError(f"must be at least {lowest}, found {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (0 and negatives are refused, never replaced)."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, found {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, found {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    profile = commands.add_parser("profile", help="print the active run profile and device policy, and why")
    profile.add_argument("--json", action="store_true")
    profile.set_defaults(func=_cmd_profile)

    _add_data_commands(commands.add_parser("data", help="check, generate, split or download the dataset"))
    _add_run_commands(commands)
    run = commands.add_parser("run", help="the main job: data check, splits, then every notebook (or: run export, "
                                          "run import)")
    run.set_defaults(func=_cmd_run)
    sharing_commands = run.add_subparsers(dest="run_command")
    export = sharing_commands.add_parser("export", help="pack finished run folders into a zip with a manifest")
    export.add_argument("run_dir", help="a run folder, or a folder of them (e.g. outputs/runs)")
    export.add_argument("archive", help="the zip to write")
    export.set_defaults(func=_cmd_export)
    import_ = sharing_commands.add_parser("import", help="check an archive of runs and unpack it where the notebooks "
                                                         "look")
    import_.add_argument("archive", help="a path or a URL (https://, file://)")
    import_.add_argument("--out", help="the run folder to unpack into (a folder of them for several runs; default: "
                                       "the outputs folder, where the notebooks look)")
    import_.add_argument("--data", help="the dataset the runs must have been trained on (default: the notebooks' "
                                        "own, as found or generated)")
    import_.set_defaults(func=_cmd_import)
    return parser


def _add_data_commands(data) -> None:
    data_commands = data.add_subparsers(dest="data_command", required=True)

    check = data_commands.add_parser("check", help="scan every file and report what is usable")
    check.add_argument("root", help="folder holding the dataset (any level above the class folders)")
    check.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    check.add_argument("--task", type=int, choices=sorted(TASK_CLASSES), default=4,
                       help="number of classes that must be present (default 4)")
    check.set_defaults(func=_cmd_check)

    synth = data_commands.add_parser("synth", help="generate phantom radiographs in the real layout")
    synth.add_argument("out")
    synth.add_argument("--per-class", type=positive_int, default=250)
    synth.add_argument("--size", type=positive_int, default=299)
    synth.add_argument("--seed", type=non_negative_int, default=0)
    synth.add_argument("--shortcut", choices=CLASSES, default=None, help="plant a corner marker on this class's images")
    synth.add_argument("--shortcut-rate", type=fraction, default=1.0,
                       help="fraction of that class's images that carry the marker")
    synth.set_defaults(func=_cmd_synth)

    split = data_commands.add_parser("split", help="make and save a seeded, duplicate-aware split")
    split.add_argument("root")
    split.add_argument("--mode", choices=("paper_a", "paper_b"), default="paper_a")
    split.add_argument("--task", type=int, choices=sorted(TASK_CLASSES), default=4)
    split.add_argument("--seed", type=non_negative_int, default=0)
    split.add_argument("--n-per-class", type=positive_int, default=None, help="paper_b: images per class")
    split.add_argument("--repeats", type=positive_int, default=3, help="paper_b: number of sub-samples")
    split.add_argument("--out", required=True, help="CSV file to write")
    split.set_defaults(func=_cmd_split)

    download = data_commands.add_parser("download", help="download the dataset through kagglehub")
    download.set_defaults(func=_cmd_download)


def _add_run_commands(commands) -> None:
    """model, train, predict, evaluate: building, training and using runs."""
    model = commands.add_parser("model", help="build a recipe's model and print its parameter table")
    model.add_argument("--recipe", choices=sorted(RECIPES), default="paper_a")
    model.add_argument("--task", type=int, choices=sorted(TASK_CLASSES), default=4)
    model.add_argument("--image-size", type=positive_int, default=None, help="default: the recipe's")
    model.add_argument("--weights", default="imagenet", help="imagenet, none, or a weights file")
    model.set_defaults(func=_cmd_model)

    train_ = commands.add_parser("train", help="train a recipe into a run folder (re-run the same command to resume)")
    train_.add_argument("--data", required=True, help="folder holding the dataset")
    train_.add_argument("--recipe", choices=sorted(RECIPES), default="paper_a")
    train_.add_argument("--task", type=int, choices=sorted(TASK_CLASSES), default=4)
    train_.add_argument("--out", required=True, help="run folder to write (or resume)")
    train_.add_argument("--epochs", type=positive_int, default=None,
                        help="default: the recipe's, capped by the profile")
    train_.add_argument("--image-size", type=positive_int, default=None,
                        help="at least 32; default: the recipe's, capped by the profile")
    train_.add_argument("--batch-size", type=positive_int, default=None)
    train_.add_argument("--weights", default=None, help="imagenet, none, or a weights file (default: profile's)")
    train_.add_argument("--seed", type=non_negative_int, default=0)
    train_.add_argument("--split", choices=("paper_a", "paper_b"), default="paper_a",
                        help="paper_a: train/val/test; paper_b: a balanced sub-sample, 90/10 (with --recipe paper_b)")
    train_.add_argument("--repeat", type=non_negative_int, default=0, help="paper_b: which sub-sample (0, 1, 2)")
    train_.add_argument("--per-class", type=non_negative_int, default=None,
                        help="images per class to sample (paper_b: in each sub-sample); 0 or default: every usable "
                             "image (paper_b: the paper's 900 in all), unless the profile is named")
    train_.add_argument("--profile", choices=config.PROFILE_NAMES, default=None,
                        help="run in this profile, as CXR_PROFILE would: its sizes, and its data cap (demo: 150 per "
                             "class). Default: chosen by the machine, without its data cap")
    train_.set_defaults(func=_cmd_train)

    predict = commands.add_parser("predict", help="class probabilities for images, with a trained run")
    predict.add_argument("images", nargs="+")
    predict.add_argument("--run", required=True, help="run folder made by `train`")
    predict.add_argument("--json", action="store_true")
    predict.add_argument("--cam", metavar="OUT_DIR", help="also write one overlay PNG per image: every class's map")
    predict.add_argument("--cam-method", choices=METHODS, default="auto",
                         help="auto: CAM for a linear head (Paper B), else Grad-CAM")
    predict.add_argument("--cam-layer", default=None,
                         help=f"Grad-CAM at this layer for finer maps: {' (2× finer) or '.join(FINER_LAYERS)} (4×). "
                              "Only layers whose every cell reaches the output are accepted: the last block of a "
                              "stage (conv4_block6_out, conv3_block4_out) is three quarters blind. Default: the "
                              "last block")
    predict.set_defaults(func=_cmd_predict)

    evaluate = commands.add_parser("evaluate", help="metrics of a trained run on its test split")
    evaluate.add_argument("--run", required=True, help="run folder made by `train`")
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument("--resamples", type=positive_int, default=1000, help="bootstrap resamples for the 95%% CIs")
    evaluate.add_argument("--no-figures", action="store_true")
    evaluate.set_defaults(func=_cmd_evaluate)


def describe_error(exc: BaseException) -> str:
    """One line: what failed, and where (for the operating system's errors, the file)."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    if isinstance(exc, DatasetError):  # what was expected and found, and what to do: worth every line
        return str(exc)
    return config.first_line(exc, limit=1000)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    unavailable = config.outputs_unavailable()
    if unavailable:
        print(f"error: {unavailable}", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except EXPECTED_ERRORS as exc:
        print(f"error: {describe_error(exc)}", file=sys.stderr)
        return 2
    except TrainingInterrupted as exc:  # SIGTERM (143) or Ctrl-C (130) during training: which epochs are kept
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: finished epochs are kept; run the same command again to continue", file=sys.stderr)
        return 130
    except tf.errors.UnavailableError as exc:  # several workers: one of them stopped (its machine lost, killed)
        print(f"error: a worker of the cluster stopped ({config.first_line(exc, 160)}); finished epochs are kept: "
              "start every worker again to continue", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
