"""Reading one image file: decode it to 8-bit grayscale whatever its mode, say why it cannot be read, and whether
it looks like a chest radiograph at all.

The same decoder serves the scan, the input pipeline, the figures and the controls, so every file is read one way.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

_OS_LITTER = {".ds_store", "thumbs.db", "desktop.ini", "icon\r"}
_METADATA_SUFFIXES = {".csv", ".xlsx", ".xls", ".txt", ".json", ".md", ".yml", ".yaml", ".html", ".pdf"}

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must be reported, not padded with grey


class BadImageError(Exception):
    """One file cannot be decoded; the message is the reason shown in the scan report."""



def is_ignored_file(path: Path) -> bool:
    """OS litter and metadata files: neither images nor errors, so they are not counted at all."""
    name = path.name.lower()
    return (
        name in _OS_LITTER
        or name.startswith("._")
        or name.startswith(".")
        or path.suffix.lower() in _METADATA_SUFFIXES
    )


def to_grayscale_array(img: Image.Image) -> np.ndarray:
    """Convert any PIL image mode to 8-bit grayscale, scaling 16-bit and 32-bit data instead of clipping."""
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit PNGs open as I;16 (or I in older Pillow); map the full 0..65535 range onto 0..255.
        values = np.asarray(img, dtype=np.float64)
        return np.clip(np.rint(values * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
    if mode == "L":
        return np.asarray(img, dtype=np.uint8)
    if mode in ("LA", "PA", "RGBA", "P"):
        # Alpha carries no radiographic information; a palette must be expanded before conversion.
        img = img.convert("RGBA").convert("RGB")
    return np.asarray(img.convert("L"), dtype=np.uint8)


def _decode(path: Path):
    """(8-bit grayscale array, original mode, file format) of one file, or BadImageError with a reason."""
    try:
        if path.stat().st_size == 0:
            raise BadImageError("empty file (0 bytes)")
        with Image.open(path) as img:
            img.load()
            array = to_grayscale_array(img)
            mode, fmt = img.mode, img.format
    except BadImageError:
        raise
    except FileNotFoundError:
        raise BadImageError("file not found" + (" (a link that leads nowhere)" if path.is_symlink() else "")) from None
    except IsADirectoryError:
        raise BadImageError("a folder, not an image file") from None
    except UnidentifiedImageError:
        raise BadImageError("not an image: no image format recognised in its bytes") from None
    except Image.DecompressionBombError as exc:
        raise BadImageError(f"image too large to decode safely: {exc}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BadImageError("a link that loops back on itself") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise BadImageError("permission denied") from None
        kind = "truncated" if "truncated" in str(exc).lower() else "corrupt or unsupported"
        raise BadImageError(f"{kind} image data: {exc}") from None
    except (SyntaxError, ValueError) as exc:
        kind = "truncated" if "truncated" in str(exc).lower() else "corrupt or unsupported"
        raise BadImageError(f"{kind} image data: {exc}") from None
    if array.ndim != 2 or min(array.shape) == 0:
        raise BadImageError(f"decoded to an unusable array of shape {array.shape}")
    return array, mode, fmt


def load_grayscale(path, size: int | None = None) -> np.ndarray:
    """Decode an image file to an 8-bit grayscale array, optionally resized to size × size.

    Raises BadImageError with a human-readable reason for empty, truncated or non-image files.
    """
    array, _, _ = _decode(Path(path))
    if size is not None and array.shape != (size, size):
        array = np.asarray(Image.fromarray(array).resize((size, size), Image.BILINEAR))
    return array


def unlike_a_radiograph(array: np.ndarray) -> str | None:
    """Why an 8-bit grayscale image looks nothing like a chest radiograph, or None when nothing stands out.

    A model answers for any input: a 1×1 pixel, a flat gradient or a lung mask still gets a class. The checks are
    deliberately loose (every one of the course's real sample radiographs passes them by a wide margin).
    """
    height, width = array.shape
    if min(height, width) < 64:
        return f"is only {width}×{height} px"
    values = array.astype(np.float32)
    if values.std() < 10:
        return f"is almost uniform (grey levels spread by {values.std():.1f})"
    levels = len(np.unique(array))
    if levels < 16:
        return f"has only {levels} grey levels (a mask or a drawing?)"
    detail = np.abs(values[2:, 1:-1] + values[:-2, 1:-1] + values[1:-1, 2:] + values[1:-1, :-2]
                    - 4 * values[1:-1, 1:-1]).mean()
    if detail < 1.0:
        return "has no fine structure at all (a smooth gradient?)"
    if detail > 60:
        return "is mostly pixel noise"
    return None


def radiograph_doubt(path) -> str | None:
    """Why an image file looks nothing like a chest radiograph (`unlike_a_radiograph`), or None: also None for a
    file that cannot be read, whose error is reported where it is read."""
    try:
        return unlike_a_radiograph(load_grayscale(path))
    except BadImageError:
        return None


def inspect_image(path) -> dict:
    """Decode one file fully and describe it; the content hash is of the decoded grayscale pixels,
    so the same picture saved as RGB and as grayscale counts as a duplicate."""
    array, mode, fmt = _decode(Path(path))
    digest = hashlib.blake2b(array.tobytes(), digest_size=16)
    digest.update(str(array.shape).encode())
    return {
        "width": int(array.shape[1]),
        "height": int(array.shape[0]),
        "mode": mode,
        "format": fmt,
        "content_hash": digest.hexdigest(),
    }


def list_image_files(folder: Path) -> tuple[list[Path], int]:
    """Candidate image files in a class folder (sorted) and how many OS/metadata files were ignored."""
    found, ignored = [], 0
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            continue
        if is_ignored_file(entry):
            ignored += 1
        else:
            found.append(entry)
    return found, ignored


@dataclasses.dataclass(frozen=True)
class Images:
    """What `read_images` read: the readable images (N, size, size) uint8, N counting readable files only (so an
    index into `pixels` skips every unreadable path), and per path its error or None."""

    pixels: np.ndarray
    errors: list


def read_images(paths, size: int) -> Images:
    """The readable images as one uint8 array, and per path its error or None, so one bad file is reported
    instead of stopping the rest."""
    images, errors = [], []
    for path in paths:
        try:
            images.append(load_grayscale(path, size))
            errors.append(None)
        except BadImageError as exc:
            errors.append(str(exc))
    return Images(np.stack(images) if images else np.zeros((0, size, size), np.uint8), errors)
