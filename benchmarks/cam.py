"""What class activation maps cost, against a plain forward pass and against a per-image loop.

- CAM of every class of a batch against the same model's forward pass on that batch: CAM is one
  forward pass plus a small matrix product, so the target is at most 1.2× the forward time.
- Grad-CAM of a batch in one call against a Python loop over its images (both: each image's predicted class).

    python benchmarks/cam.py [--quick]
"""

from __future__ import annotations

from common import parser, report

TARGET = 1.2


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    size, batch, repeats = (128, 16, 3) if args.quick else (224, 32, 5)

    import numpy as np

    from helpers import cam
    from helpers.models import build_model
    from helpers.timing import seconds_per_call

    model, _, _ = build_model("cam", 4, size, weights="none")
    images = np.random.default_rng(0).normal(0, 60, (batch, size, size, 3)).astype(np.float32)
    forward = seconds_per_call(lambda: model(images, training=False).numpy(), repeats=repeats)
    all_maps = seconds_per_call(lambda: cam.class_activation_maps(model, images), repeats=repeats)
    batched = seconds_per_call(lambda: cam.grad_cam(model, images), repeats=repeats)
    loop = seconds_per_call(lambda: [cam.grad_cam(model, images[i:i + 1]) for i in range(batch)], repeats=repeats)
    cam_ratio, speedup = all_maps / forward, loop / batched
    print(f"ResNet50 (random weights), batch {batch} at {size} px, median of {repeats} calls after a warm-up")
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
