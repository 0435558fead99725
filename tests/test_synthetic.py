"""The phantom generator: real layout, masks, determinism, learnable classes, the planted shortcut."""

import hashlib

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from helpers.cli import main
from helpers.data import scan_dataset
from helpers.datasets import find_dataset
from helpers.synthetic import MANIFEST_NAME, METADATA_NAME, ensure_phantoms, generate_phantoms, render_phantom
from helpers.tasks import CLASSES


def _digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_matches_the_real_dataset_and_passes_the_scan(phantom_root):
    assert phantom_root.name == "COVID-19_Radiography_Dataset"
    for cls in CLASSES:
        for kind in ("images", "masks", "lesion_masks"):
            assert (phantom_root / cls / kind / f"{cls}-1.png").exists()
    scan = scan_dataset(find_dataset(phantom_root))
    assert scan.class_counts() == {c: 10 for c in CLASSES}
    assert scan.skipped == [] and scan.ignored == 0
    assert scan.index["mask_path"].notna().all() and scan.index["lesion_mask_path"].notna().all()
    assert find_dataset(phantom_root).is_phantom


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    a = generate_phantoms(tmp_path / "a", per_class=3, size=48, seed=5)
    b = generate_phantoms(tmp_path / "b", per_class=3, size=48, seed=5)
    c = generate_phantoms(tmp_path / "c", per_class=3, size=48, seed=6)
    assert _digests(a) == _digests(b)
    differing = {k for k, v in _digests(c).items() if _digests(a).get(k) != v}
    assert any(k.endswith(".png") and "/images/" in k for k in differing)


def test_lesions_lie_inside_the_lungs_and_only_abnormal_classes_have_them():
    for class_index, cls in enumerate(CLASSES):
        for n in range(5):
            image, lungs, lesion = render_phantom(cls, np.random.default_rng([0, class_index, n]), 96)
            assert image.dtype == np.uint8 and image.shape == lungs.shape == lesion.shape == (96, 96)
            assert 0.08 < lungs.mean() < 0.35, "two lung fields of plausible size"
            assert not (lesion & ~lungs).any()
            if cls == "Normal":
                assert not lesion.any()
            else:
                assert 0.001 < lesion.mean() < 0.15


def test_classes_are_learnable_from_pixels():
    """A linear model on 32×32 thumbnails must beat chance (25%) by far: the findings carry signal."""
    features, labels = [], []
    for class_index, cls in enumerate(CLASSES):
        for n in range(30):
            image, _, _ = render_phantom(cls, np.random.default_rng([1, class_index, n]), 64)
            thumb = Image.fromarray(image).resize((32, 32), Image.BILINEAR)
            features.append(np.asarray(thumb, dtype=np.float32).ravel() / 255)
            labels.append(class_index)
    accuracy = cross_val_score(LogisticRegression(max_iter=2000), np.array(features), labels, cv=3).mean()
    assert accuracy > 0.55


def test_shortcut_marker_is_planted_on_one_class_only(tmp_path):
    root = generate_phantoms(tmp_path, per_class=4, size=64, seed=0, shortcut_class="Normal")
    metadata = pd.read_csv(root / METADATA_NAME)
    assert metadata.groupby("label")["marker"].sum().to_dict() == {
        "COVID": 0, "Lung_Opacity": 0, "Normal": 4, "Viral Pneumonia": 0}
    corner = lambda cls: np.asarray(Image.open(root / cls / "images" / f"{cls}-1.png"))[4:7, 57:60]  # noqa: E731
    assert corner("Normal").min() > 240 and corner("COVID").max() < 200


def test_a_shortcut_set_is_the_clean_set_with_the_marker_drawn_in(tmp_path):
    """Notebook 05 compares the clean and shortcut models on the same images: a marked phantom must differ from
    its clean twin by the marker alone, and every other class must be byte-identical."""
    from helpers.synthetic import add_marker

    clean = generate_phantoms(tmp_path / "clean", per_class=3, size=64, seed=0)
    marked = generate_phantoms(tmp_path / "shortcut", per_class=3, size=64, seed=0, shortcut_class="COVID",
                               shortcut_rate=0.5)
    planted = pd.read_csv(marked / METADATA_NAME).set_index("relpath")["marker"]
    assert 0 < planted.sum() < 3  # a rate below 1: some COVID images carry it, some not
    for relpath, has_marker in planted.items():
        twin = np.asarray(Image.open(clean / relpath))
        expected = add_marker(twin) if has_marker else twin
        np.testing.assert_array_equal(np.asarray(Image.open(marked / relpath)), expected, err_msg=relpath)


def test_ensure_phantoms_reuses_a_matching_set_and_regenerates_otherwise(tmp_path):
    root = ensure_phantoms(tmp_path, per_class=2, size=40)
    stamp = (root / MANIFEST_NAME).stat().st_mtime_ns
    assert ensure_phantoms(tmp_path, per_class=2, size=40) == root
    assert (root / MANIFEST_NAME).stat().st_mtime_ns == stamp
    ensure_phantoms(tmp_path, per_class=3, size=40)
    assert (root / "COVID" / "images" / "COVID-3.png").exists()


def test_the_generator_never_overwrites_a_dataset_it_did_not_make(tmp_path, capsys):
    real = tmp_path / "COVID-19_Radiography_Dataset" / "COVID" / "images"
    real.mkdir(parents=True)
    (real / "COVID-1.png").write_bytes(b"a real radiograph")
    assert main(["data", "synth", str(tmp_path), "--per-class", "2", "--size", "40"]) == 2
    message = capsys.readouterr().err.strip()
    assert "was not made by this generator" in message and len(message.splitlines()) == 1
    assert (real / "COVID-1.png").read_bytes() == b"a real radiograph"


def test_an_interrupted_generation_leaves_no_set_that_looks_finished(tmp_path, monkeypatch):
    from helpers import synthetic

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "_save_png", interrupted)
    try:
        generate_phantoms(tmp_path, per_class=2, size=40)
    except KeyboardInterrupt:
        pass
    assert not (tmp_path / "COVID-19_Radiography_Dataset").exists()
    monkeypatch.undo()
    root = ensure_phantoms(tmp_path, per_class=2, size=40)  # the leftover is cleared, the set made whole
    assert len(list(root.rglob("images/*.png"))) == 8 and not list(tmp_path.glob(".*partial"))


def test_synth_cli(tmp_path, capsys):
    assert main(["data", "synth", str(tmp_path), "--per-class", "2", "--size", "40", "--seed", "1"]) == 0
    assert "Wrote 2 phantom radiographs per class" in capsys.readouterr().out
    assert len(list(tmp_path.rglob("images/*.png"))) == 8


def test_add_marker_draws_exactly_the_planted_shortcut():
    """Pasting the marker on a clean phantom gives the marked phantom: the marker test changes nothing else."""
    from helpers.synthetic import add_marker, marker_mask, render_phantom

    clean = render_phantom("Normal", np.random.default_rng(5), 96, marker=False)[0]
    marked = render_phantom("Normal", np.random.default_rng(5), 96, marker=True)[0]
    np.testing.assert_array_equal(add_marker(clean), marked)
    np.testing.assert_array_equal(add_marker(np.stack([clean, clean]))[1], marked)
    assert add_marker(clean) is not clean and (clean != marked).sum() == marker_mask(96).sum() > 0
    lungs = render_phantom("Normal", np.random.default_rng(5), 96)[1]
    assert not (marker_mask(96) & lungs).any()  # the shortcut sits outside the lungs
    around = marker_mask(96, margin=12)
    assert (around >= marker_mask(96)).all() and around.sum() > 4 * marker_mask(96).sum() and around[0, -1]
