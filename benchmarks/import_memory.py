"""Peak memory while `run import` checks an archive's hashes (issue 36): one 2 GB entry, hashed in 1 MB chunks by
the import's own check (`sharing._checked_manifest`) against the whole entry read at once (the import before issue 36:
`sha256(packed.read(name))`).

The archive is generated: a run whose weights file is 2,000,000,000 zero bytes, deflated (the zip is a few MB), its
hashes all correct, so both ways read and hash every byte. Each way runs in a fresh process (a peak only ever grows
within one) that imports the course's code first, then measures its peak resident memory before and after; the
difference is what checking the archive cost. CXR_IMPORT_SCALE=2 lets the import's bounds admit the entry.

    python benchmarks/import_memory.py [--quick]     # --quick: a 256 MB entry
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from common import REPO, parser, report

CHUNK = 1 << 20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def make_archive(path: Path, size: int) -> None:
    """A one-run archive whose model.weights.npz is `size` zero bytes, written and hashed in chunks."""
    small = {"settings.json": b"{}", "split.csv": b"relpath\n", "history.csv": b"epoch\n"}
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in small.items()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as packed:
        for name, data in small.items():
            packed.writestr(f"runs/r/{name}", data)
        digest, zeros, left = hashlib.sha256(), bytes(CHUNK), size
        with packed.open("runs/r/model.weights.npz", "w", force_zip64=True) as entry:
            while left:
                block = zeros[:min(CHUNK, left)]
                entry.write(block)
                digest.update(block)
                left -= len(block)
        digests["model.weights.npz"] = digest.hexdigest()
        packed.writestr("manifest.json", json.dumps({"format": "cxr-course-runs/2", "runs": [{
            "folder": "r", "profile": "fast", "classes": ["Normal"], "files": digests}]}))


def child(mode: str, archive: Path) -> None:
    """Check the archive's hashes one way; print the peaks before and after as JSON."""
    from helpers import sharing  # the course's code (and TensorFlow) first: not counted

    before, start = peak_mb(), time.perf_counter()
    with zipfile.ZipFile(archive) as packed:
        if mode == "streamed":
            sharing._checked_manifest(packed, str(archive))
        else:  # before issue 36: each entry read whole, then hashed
            manifest = json.loads(packed.read("manifest.json"))
            for name, digest in manifest["runs"][0]["files"].items():
                assert hashlib.sha256(packed.read(f"runs/r/{name}")).hexdigest() == digest
    print(json.dumps({"before_mb": before, "after_mb": peak_mb(), "seconds": time.perf_counter() - start}))


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    size = 256 * 2 ** 20 if args.quick else 2_000_000_000
    with tempfile.TemporaryDirectory(prefix="cxr-bench-import-") as folder:
        archive = Path(folder) / "large.zip"
        make_archive(archive, size)
        print(f"Archive: one entry of {size:,} bytes (zeros, deflated to {archive.stat().st_size / 2 ** 20:.1f} MB "
              "on disk)")
        env = {**os.environ, "CXR_IMPORT_SCALE": "4", "CUDA_VISIBLE_DEVICES": ""}
        results = {}
        for mode in ("streamed", "whole"):
            done = subprocess.run([sys.executable, __file__, "--child", mode, str(archive)], capture_output=True,
                                  text=True, env=env, cwd=REPO, check=True)
            found = json.loads(done.stdout.strip().splitlines()[-1])
            results[mode] = found
            print(f"{mode:>8}: peak resident memory {found['before_mb']:,.0f} MB before checking, "
                  f"{found['after_mb']:,.0f} MB after: +{found['after_mb'] - found['before_mb']:,.0f} MB "
                  f"({found['seconds']:.1f} s)")
    grown = {mode: found["after_mb"] - found["before_mb"] for mode, found in results.items()}
    print(f"Checking the {size / 1e9:.2f} GB entry in chunks raised the peak by {grown['streamed']:,.0f} MB; read "
          f"whole, by {grown['whole']:,.0f} MB.")
    report("import_memory", {"entry_bytes": size, "streamed_growth_mb": grown["streamed"],
                             "whole_growth_mb": grown["whole"]})


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        sys.path.insert(0, str(REPO))
        child(sys.argv[2], Path(sys.argv[3]))
    else:
        main()
