"""The course's input pipeline against keras.utils.image_dataset_from_directory.

Same PNG files (phantoms, 299 px like the real images), same output size, batch, shuffling and ResNet50
normalisation. The course pipeline decodes each file once and caches uint8 grayscale, so its first epoch
pays for decoding and every later epoch is memory work; image_dataset_from_directory decodes every epoch.
Target: at least 4× on the cached epochs. The first epoch is reported too.

Also measured (issue 22), for a fast GPU: the same cached pipeline sending uint8 grayscale batches, as a model with
its normalisation inside would take them (1 byte a pixel instead of 3 channels × 4 bytes), against the same baseline.

    python benchmarks/input_pipeline.py [--quick]
"""

from __future__ import annotations

from common import median, parser, phantom_index, report

TARGET = 4.0


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    per_class, epochs, size, batch = (100, 3, 224, 32) if args.quick else (500, 4, 224, 32)

    from helpers.pipeline import build_dataset
    from helpers.tasks import CLASSES
    from helpers.timing import compare_input_pipelines, epoch_rates

    index = phantom_index(per_class, folder=args.data)
    print(f"{len(index)} phantom PNGs (299 px) → {size} px, batch {batch}, {epochs} epochs each")
    compare_input_pipelines(index.sample(64, random_state=0), CLASSES, size, batch, 1)  # warm-up, not timed
    rates = compare_input_pipelines(index, CLASSES, size, batch, epochs)
    print(rates.pivot(index="epoch", columns="pipeline", values="images_per_second").round(0).to_string())
    ours = rates[rates["pipeline"] == "helpers.pipeline"]["images_per_second"].to_numpy()
    theirs = rates[rates["pipeline"] == "image_dataset_from_directory"]["images_per_second"].to_numpy()
    cached, first = median(ours[1:]) / median(theirs[1:]), ours[0] / theirs[0]
    print(f"cached epochs: {cached:.1f}× image_dataset_from_directory (target ≥ {TARGET:.0f}×: "
          f"{'met' if cached >= TARGET else 'MISSED'})")
    print(f"first epoch (decoding and filling the cache): {first:.2f}×")
    class_id = {c: i for i, c in enumerate(CLASSES)}
    grey = build_dataset(index["path"], index["label"].map(class_id), len(CLASSES), size, batch, training=True,
                         normalisation=None)
    grey_rate = median(epoch_rates(grey, epochs)[1:])
    grey_ratio, float_batch, grey_batch = grey_rate / median(theirs[1:]), size * size * 3 * 4, size * size
    print(f"uint8 grayscale batches (normalised inside a model): {grey_rate:,.0f} img/s, {grey_ratio:.1f}× "
          f"image_dataset_from_directory, {float_batch / grey_batch:.0f}× fewer bytes per image to the device "
          f"({grey_batch / 1e3:.0f} KB vs {float_batch / 1e3:.0f} KB)")
    report("input_pipeline", {
        "quick": args.quick, "images": len(index), "image_size": size, "batch_size": batch,
        "ours_first_epoch_img_s": round(float(ours[0]), 1), "ours_cached_img_s": round(median(ours[1:]), 1),
        "baseline_first_epoch_img_s": round(float(theirs[0]), 1), "baseline_img_s": round(median(theirs[1:]), 1),
        "cached_ratio": round(cached, 2), "first_epoch_ratio": round(first, 2), "target": TARGET,
        "target_met": bool(cached >= TARGET), "uint8_grey_img_s": round(grey_rate, 1),
        "uint8_grey_ratio": round(grey_ratio, 2),
    })


if __name__ == "__main__":
    main()
