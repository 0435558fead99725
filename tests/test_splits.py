"""Splits: seeded, stratified, duplicate-aware, saved and reloaded unchanged."""

import os
import time

import numpy as np
import pandas as pd
import pytest

from helpers import config, splits
from helpers.cli import main
from helpers.data import scan_dataset
from helpers.datasets import find_dataset
from helpers.splits import load_split, make_split, paper_a_split, paper_b_split, sample_distinct, save_split
from helpers.synthetic import generate_phantoms
from helpers.tasks import CLASSES


def fake_index(per_class=(100, 60, 200, 40), duplicate_every=7) -> pd.DataFrame:
    """An index like the scan's, where every `duplicate_every`-th image has an identical twin."""
    rows = []
    for cls, n in zip(CLASSES, per_class):
        for i in range(n):
            content = f"{cls}-{i}"
            rows.append({"relpath": f"{cls}/images/{cls}-{i}.png", "label": cls, "content_hash": content})
            if i % duplicate_every == 0:
                rows.append({"relpath": f"{cls}/images/{cls}-{i}-copy.png", "label": cls,
                             "content_hash": content})
    # One picture filed under two classes, as happens between sources.
    rows.append({"relpath": "Normal/images/cross.png", "label": "Normal", "content_hash": "COVID-0"})
    return pd.DataFrame(rows)


def _straddling(split):
    return split.groupby(["repeat", "content_hash"])["split"].nunique().gt(1).sum()


def test_paper_a_split_is_stratified_three_way_and_never_splits_duplicates():
    index = fake_index()
    split = paper_a_split(index, task=4, seed=0)
    assert len(split) == len(index)
    assert _straddling(split) == 0
    shares = split["split"].value_counts(normalize=True)
    assert shares["test"] == pytest.approx(0.2, abs=0.02) and shares["val"] == pytest.approx(0.1, abs=0.02)
    per_class = split.groupby("label")["split"].value_counts(normalize=True).unstack()
    assert (per_class["test"] - 0.2).abs().max() < 0.04, "each class keeps its share in the test set"


def test_splits_are_deterministic_under_a_seed_and_change_with_it():
    index = fake_index()
    a, b, c = (paper_a_split(index, seed=s) for s in (3, 3, 4))
    pd.testing.assert_frame_equal(a, b)
    assert not a["split"].equals(c.set_index("relpath").loc[a["relpath"], "split"].reset_index(drop=True))


@pytest.mark.parametrize("task, classes", [
    (3, {"COVID", "Normal", "Viral Pneumonia"}),
    (2, {"COVID", "Normal"}),
])
def test_task_keeps_only_its_classes(task, classes):
    assert set(paper_a_split(fake_index(), task=task)["label"]) == classes


def test_paper_b_split_is_balanced_repeated_and_90_10():
    index = fake_index(per_class=(200, 200, 200, 200))
    split = paper_b_split(index, task=3, n_per_class=100, repeats=3, seed=0)
    assert _straddling(split) == 0
    counts = split.groupby(["repeat", "split", "label"]).size().unstack()
    assert (counts.xs("train", level="split") == 90).all().all()
    assert (counts.xs("test", level="split") == 10).all().all()
    drawn = [set(split.loc[split["repeat"] == r, "content_hash"]) for r in range(3)]
    assert drawn[0] != drawn[1], "each repeat is its own random sub-sample"


def test_paper_b_default_is_900_images_and_explicit_sizes_are_checked():
    index = fake_index(per_class=(500, 500, 500, 500), duplicate_every=1000)
    split = paper_b_split(index, task=2, repeats=1)
    assert split.groupby("label").size().to_dict() == {"COVID": 450, "Normal": 450}
    with pytest.raises(ValueError, match="needs 600 distinct images per class"):
        paper_b_split(index, task=3, n_per_class=600)
    with pytest.warns(UserWarning, match="using 400 per class"):
        paper_b_split(fake_index(per_class=(400, 400, 401, 400), duplicate_every=1000), task=2, repeats=1)


def with_other_pixels(index: pd.DataFrame, cls: str = "COVID") -> pd.DataFrame:
    """The same files, labels and duplicates, but `cls`'s images with other content hashes, sorting in reverse order
    (as a marker drawn on one class's images changes their hashes)."""
    hashes = sorted(index.loc[index["label"] == cls, "content_hash"].unique())
    renamed = {h: f"marked-{len(hashes) - i:06d}" for i, h in enumerate(hashes)}
    return index.assign(content_hash=index["content_hash"].replace(renamed))


@pytest.mark.parametrize("mode, options", [
    ("paper_a", {"task": 4}),
    ("paper_b", {"task": 3, "n_per_class": 30, "repeats": 2}),
])
def test_a_split_depends_on_names_labels_and_duplicates_not_on_pixels(mode, options):
    clean = fake_index()
    marked = with_other_pixels(clean)
    covid = clean["label"] == "COVID"
    assert (clean.loc[covid, "content_hash"].rank() != marked.loc[covid, "content_hash"].rank()).any(), \
        "the hashes sort differently: a split ordered by hash would differ"
    sides = [make_split(index, mode=mode, **options).set_index(["repeat", "relpath"])["split"].sort_index()
             for index in (clean, marked)]
    pd.testing.assert_series_equal(*sides)
    drawn = [set(sample_distinct(index, per_class=20)["relpath"]) for index in (clean, marked)]
    assert drawn[0] == drawn[1], "the demo profile's sample of the real data is drawn by name too"


def test_clean_and_shortcut_phantoms_split_alike(phantom_root, tmp_path):
    """Notebook 05 tests the shortcut model on the clean set's test images: none may be in its training part."""
    shortcut_root = generate_phantoms(tmp_path, per_class=10, size=64, seed=0, shortcut_class="COVID")
    clean, shortcut = (scan_dataset(find_dataset(root)).index for root in (phantom_root, shortcut_root))
    assert not set(clean["content_hash"]) >= set(shortcut["content_hash"]), "the marked images hash differently"
    sides = [paper_a_split(index, task=4).set_index("relpath")["split"].sort_index() for index in (clean, shortcut)]
    pd.testing.assert_series_equal(*sides)


def test_unknown_mode_and_task_are_rejected():
    with pytest.raises(ValueError, match="split mode must be one of"):
        make_split(fake_index(), mode="kfold")
    with pytest.raises(ValueError, match="task must be one of"):
        make_split(fake_index(), task=5)


def test_saved_split_reloads_identically_with_resolved_paths(tmp_path):
    split = paper_a_split(fake_index())
    path = save_split(split, tmp_path / "splits" / "a.csv")
    again = load_split(path, tmp_path / "dataset")
    pd.testing.assert_frame_equal(again.drop(columns="path"), split)
    assert again["path"].iloc[0] == str(tmp_path / "dataset" / split["relpath"].iloc[0])


def test_split_cli_writes_the_csv(phantom_root, tmp_path, capsys):
    out = tmp_path / "split.csv"
    assert main(["data", "split", str(phantom_root), "--mode", "paper_b", "--task", "2",
                 "--n-per-class", "10", "--repeats", "2", "--out", str(out)]) == 0
    split = pd.read_csv(out)
    assert len(split) == 2 * 20 and set(split["split"]) == {"train", "test"}
    assert np.all(split.groupby("repeat").size() == 20)


@pytest.fixture
def saved(phantom_root, tmp_path, monkeypatch):
    """The phantoms' Paper A split, saved under a temporary outputs/splits/: (scan, split, path)."""
    monkeypatch.setattr(config, "OUTPUT_DIR", tmp_path / "outputs")
    scan = scan_dataset(find_dataset(phantom_root))
    return scan, splits.saved_split(scan, "paper_a", 4), splits.saved_split_path(scan, "paper_a", 4)


def remade_once(saved, capsys) -> str:
    """Load the saved split again: it must come back whole, with exactly one line naming the damaged file."""
    scan, split, path = saved
    capsys.readouterr()
    again = splits.saved_split(scan, "paper_a", 4)
    pd.testing.assert_frame_equal(again, split)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "damaged" in lines[0], lines
    splits.saved_split(scan, "paper_a", 4)
    assert capsys.readouterr().out == "", "the remade file is trusted"
    return lines[0]


def test_a_saved_split_cut_short_is_remade_in_full(saved, capsys):
    """A disk that filled, a hand edit or a sync conflict cut the last rows: they must not go missing unnoticed."""
    scan, split, path = saved
    assert len(split) == len(scan.index) == 40
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-6]))
    assert "34 rows instead of 40" in remade_once(saved, capsys)


@pytest.mark.parametrize("edit", [
    lambda text: text.replace(",train,", ",test,", 1),  # one image moved into the test set
    lambda text: text[:len(text) // 2] + chr(ord(text[len(text) // 2]) ^ 1) + text[len(text) // 2 + 1:],  # a bit
])
def test_an_edited_saved_split_is_remade(saved, capsys, edit):
    path = saved[2]
    text = path.read_text()
    path.write_text(edit(text))
    assert path.read_text() != text
    remade_once(saved, capsys)


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00 not a split", b'relpath,label\n"never closed,'])
def test_an_unreadable_saved_split_is_remade(saved, capsys, content):
    saved[2].write_bytes(content)
    remade_once(saved, capsys)


def test_a_saved_split_without_its_checksum_is_remade(saved, capsys):
    """As one saved by an older version, or by a run killed between the CSV and its record."""
    path = saved[2]
    path.with_name(path.name + ".json").unlink(missing_ok=True)
    assert "no record" in remade_once(saved, capsys)


def test_stale_partial_split_files_are_removed(saved):
    """A kill while a split is written leaves a temporary file; one being written right now is left alone."""
    scan, _, path = saved
    stale = [path.with_name(f".partial-999999-{path.name}"), path.with_name(".partial-999999-other.csv")]
    fresh = path.with_name(".partial-999998-being-written.csv")
    for leftover in (*stale, fresh):
        leftover.write_text("relpath,label,split\n")
    old = time.time() - 3600
    for leftover in stale:
        os.utime(leftover, (old, old))
    splits.saved_split(scan, "paper_a", 4)
    assert [p.exists() for p in (*stale, fresh)] == [False, False, True]


def test_a_saved_split_says_where_it_is_and_takes_other_sizes(saved):
    """Issue 25: notebook 02 needs neither `saved_split_path` nor `make_split` beside `saved_split`."""
    scan, split, path = saved
    assert split.attrs["saved_at"] == str(path) and path.exists()
    assert splits.saved_split(scan, "paper_a", 4).attrs["saved_at"] == str(path), "loaded again: the same file"
    five = splits.saved_split(scan, "paper_b", task=2, n_per_class=4, repeats=5)
    made = make_split(scan.index, mode="paper_b", task=2, n_per_class=4, repeats=5)
    pd.testing.assert_frame_equal(five[made.columns], made)
    other = splits.saved_split_path(scan, "paper_b", 2, n_per_class=4, repeats=5)
    assert five.attrs["saved_at"] == str(other) and other != splits.saved_split_path(scan, "paper_b", 2)
    with pytest.raises(ValueError, match=r"paper_a split takes the sizes \('per_class',\); found \['repeats'\]"):
        splits.saved_split(scan, "paper_a", 4, repeats=5)
