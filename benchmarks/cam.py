"""What class activation maps cost, against a plain forward pass and against a per-image loop.

- CAM of every class of a batch against the same model's forward pass on that batch: CAM is one
  forward pass plus a small matrix product, so the target is at most 1.2× the forward time.
- Grad-CAM of a batch in one call against a Python loop over its images (both: each image's predicted class).

    python benchmarks/cam.py [--quick]
"""

from __future__ import annotations

from common import interleaved_seconds, parser, report

TARGET = 1.2


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    size, batch, repeats = (128, 16, 5) if args.quick else (224, 32, 5)

    import numpy as np

    from helpers import cam
    from helpers.models import build_model

    model = build_model("linear", 4, size, weights="none").model
    images = np.random.default_rng(0).normal(0, 60, (batch, size, size, 3)).astype(np.float32)
    seconds = interleaved_seconds({
        "forward": lambda: model(images, training=False).numpy(),
        "cam": lambda: cam.maps(model, images, "cam"),
    }, repeats)
    forward, all_maps = seconds["forward"], seconds["cam"]
    predicted = list(model(images, training=False).numpy().argmax(axis=1))  # Grad-CAM of each image's class
    seconds = interleaved_seconds({
        "batched": lambda: cam.maps(model, images, "grad-cam", predicted),
        "loop": lambda: [cam.maps(model, images[i:i + 1], "grad-cam", predicted[i]) for i in range(batch)],
    }, max(2, repeats // 2))
    batched, loop = seconds["batched"], seconds["loop"]
    cam_ratio, speedup = all_maps / forward, loop / batched
    print(f"ResNet50 (random weights), batch {batch} at {size} px, medians of calls timed in turns after a warm-up")
    print(f"  forward pass                      {forward * 1e3:8.1f} ms")
    print(f"  CAM, all 4 classes                {all_maps * 1e3:8.1f} ms   {cam_ratio:.2f}× the forward pass "
          f"(target ≤ {TARGET}: {'met' if cam_ratio <= TARGET else 'MISSED'})")
    print(f"  Grad-CAM, batched                 {batched * 1e3:8.1f} ms")
    print(f"  Grad-CAM, one image at a time     {loop * 1e3:8.1f} ms   batched is {speedup:.1f}× faster")
    report("cam", {
        "quick": args.quick, "image_size": size, "batch_size": batch,
        "forward_ms": round(forward * 1e3, 1), "cam_all_classes_ms": round(all_maps * 1e3, 1),
        "cam_over_forward": round(cam_ratio, 3), "target": TARGET, "target_met": bool(cam_ratio <= TARGET),
        "grad_cam_batched_ms": round(batched * 1e3, 1), "grad_cam_loop_ms": round(loop * 1e3, 1),
        "batched_speedup": round(speedup, 2),
    })


if __name__ == "__main__":
    main()
