"""The scan: every file decoded once; usable ones indexed and converted correctly, bad ones reported."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from helpers.cli import main
from helpers.data import format_report, scan_dataset
from helpers.datasets import find_dataset
from helpers.image_files import load_grayscale
from helpers.tasks import CLASSES
from tests.conftest import gray, write_png


@pytest.fixture
def messy_dataset(make_tree):
    """A Kaggle-layout tree with one of every file kind the real world throws at a loader."""
    download = make_tree({c: 2 for c in CLASSES})
    covid = download / "COVID-19_Radiography_Dataset" / "COVID" / "images"
    rgb = np.stack([gray(seed=7)] * 3, axis=-1)
    write_png(covid / "rgb.png", rgb)
    write_png(covid / "rgba.png", np.dstack([gray(seed=8)] * 3 + [np.full((16, 16), 255, np.uint8)]))
    Image.fromarray(gray(seed=9)).convert("LA").save(covid / "la.png")
    Image.fromarray(rgb).convert("P").save(covid / "palette.png")
    Image.fromarray(np.full((16, 16), 65535, dtype=np.uint16)).save(covid / "sixteen bit.png")
    Image.fromarray(gray(seed=10)).save(covid / "jpeg inside.png", format="JPEG")
    write_png(covid / "café-ü.png", gray(seed=11, size=24))
    write_png(covid / "big.png", gray(seed=12, size=40))
    (covid / "empty.png").write_bytes(b"")
    whole = io.BytesIO()
    Image.fromarray(gray(seed=13, size=64)).save(whole, format="PNG")
    (covid / "truncated.png").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    (covid / "notes.png").write_text("this is not an image")
    for litter in (".DS_Store", "._COVID-1.png", "Thumbs.db", "COVID.metadata.xlsx", "list.csv"):
        (covid / litter).write_bytes(b"\x00\x01junk")
    return download


def test_every_decodable_mode_is_kept_and_every_bad_file_skipped_with_its_reason(messy_dataset):
    scan = scan_dataset(find_dataset(messy_dataset))
    covid = scan.index[scan.index["label"] == "COVID"].set_index("relpath")
    kept = {name.split("/")[-1] for name in covid.index}
    assert kept == {"COVID-1.png", "COVID-2.png", "rgb.png", "rgba.png", "la.png", "palette.png",
                    "sixteen bit.png", "jpeg inside.png", "café-ü.png", "big.png"}
    assert covid.loc["COVID/images/jpeg inside.png", "format"] == "JPEG"
    assert covid.loc["COVID/images/big.png", ["width", "height"]].tolist() == [40, 40]
    assert set(scan.index["mode"]) >= {"L", "RGB", "RGBA", "LA", "P"}

    reasons = {item["path"].split("/")[-1]: item["reason"] for item in scan.skipped}
    assert set(reasons) == {"empty.png", "truncated.png", "notes.png"}
    assert reasons["empty.png"] == "empty file (0 bytes)"
    assert "truncated" in reasons["truncated.png"]
    assert reasons["notes.png"].startswith("not an image")
    assert scan.ignored == 5  # OS litter and metadata: neither images nor errors
    assert scan.class_counts() == {"COVID": 10, "Lung_Opacity": 2, "Normal": 2, "Viral Pneumonia": 2}
    assert scan.index.loc[scan.index["label"] == "COVID", "mask_path"].notna().sum() == 2


def test_conversions_to_grayscale_are_faithful(tmp_path):
    picture = gray(seed=3)
    rgb = write_png(tmp_path / "rgb.png", np.stack([picture] * 3, axis=-1))
    np.testing.assert_array_equal(load_grayscale(rgb), picture)

    sixteen = tmp_path / "sixteen.png"
    Image.fromarray(np.array([[0, 257, 32896, 65535]], dtype=np.uint16)).save(sixteen)
    assert Image.open(sixteen).mode.startswith("I")
    # Scaled to 8 bits across the whole range, not clipped at 255.
    np.testing.assert_array_equal(load_grayscale(sixteen), [[0, 1, 128, 255]])

    palette = tmp_path / "palette.png"
    Image.fromarray(np.stack([picture] * 3, axis=-1)).convert("P", palette=Image.ADAPTIVE).save(palette)
    assert np.abs(load_grayscale(palette).astype(int) - picture).mean() < 8

    assert load_grayscale(rgb, size=8).shape == (8, 8)


def test_identical_pictures_are_duplicates_even_across_classes_and_modes(make_tree):
    download = make_tree({c: 2 for c in CLASSES})
    root = download / "COVID-19_Radiography_Dataset"
    same = gray(seed=99)
    write_png(root / "COVID" / "images" / "copy-a.png", same)
    write_png(root / "Normal" / "images" / "copy-b.png", np.stack([same] * 3, axis=-1))  # RGB copy
    report = scan_dataset(find_dataset(download)).to_dict()
    assert report["duplicates"]["groups"] == 1
    assert report["duplicates"]["groups_across_classes"] == 1
    assert report["duplicates"]["paths"] == [["COVID/images/copy-a.png", "Normal/images/copy-b.png"]]


def test_data_check_cli_json_has_counts_modes_and_skipped(messy_dataset, capsys):
    assert main(["data", "check", str(messy_dataset), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classes"]["COVID"] == 10
    assert report["modes"]["L"] >= 6
    assert {item["reason"] for item in report["skipped"]} >= {"empty file (0 bytes)"}
    assert all(set(item) == {"path", "reason"} for item in report["skipped"])


def test_data_check_cli_text_lists_skipped_files(messy_dataset, capsys):
    assert main(["data", "check", str(messy_dataset)]) == 0
    text = capsys.readouterr().out
    assert "COVID/images/empty.png: empty file (0 bytes)" in text
    assert "Skipped:       3 file(s)" in text


def test_printing_a_scan_shows_the_report_the_cli_prints(messy_dataset, capsys):
    """Issue 25: notebook 01 prints the scan; it shows what `data check` shows, without a second name to learn."""
    assert main(["data", "check", str(messy_dataset)]) == 0
    printed = capsys.readouterr().out
    scan = scan_dataset(find_dataset(messy_dataset))
    assert str(scan) == format_report(scan) and str(scan) + "\n" == printed
    assert "Usable images per class:" in str(scan) and "empty file (0 bytes)" in str(scan)


@pytest.mark.parametrize("counts, message", [
    ({"COVID": 2, "Normal": 2, "Viral Pneumonia": 2}, "missing class(es) Lung_Opacity"),
    ({}, None),
])
def test_data_check_cli_fails_with_one_clear_message(make_tree, tmp_path, capsys, counts, message):
    root = make_tree(counts) if counts else tmp_path / "empty-folder"
    root.mkdir(exist_ok=True)
    assert main(["data", "check", str(root), "--json"]) == 2
    captured = capsys.readouterr()
    error = json.loads(captured.out)["error"]
    assert error in captured.err
    assert (message or "unknown layout") in error


def test_class_whose_files_are_all_bad_is_an_error(make_tree):
    download = make_tree({c: 1 for c in CLASSES})
    victim = download / "COVID-19_Radiography_Dataset" / "Normal" / "images" / "Normal-1.png"
    victim.write_bytes(b"")
    with pytest.raises(Exception, match="Normal have no usable images"):
        scan_dataset(find_dataset(download))
