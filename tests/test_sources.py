"""The dataset's sources: the four metadata sheets read and joined leniently, what they lack said and survived, and
the held-out-collection measurement, which must find the gap the styled phantoms plant and none on plain ones."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from experiments.held_out_source import measure
from helpers.cli import main
from helpers.data import scan_dataset
from helpers.datasets import find_dataset
from helpers.evaluation import group_only_rules
from helpers.sources import (
    SHEET_COLUMNS,
    UNKNOWN,
    collection,
    held_out_split,
    image_sources,
    name_key,
    sheet_name,
    source_table,
)
from helpers.synthetic import COLLECTIONS, METADATA_NAME, apply_style, generate_phantoms, write_sheet
from helpers.tasks import CLASSES


def _sources(root):
    return image_sources(scan_dataset(find_dataset(root)).index, root)


@pytest.fixture()
def tree(tmp_path, phantom_root):
    """A private copy of the shared phantom set (10 per class, 64 px, with its sheets), free to damage."""
    return shutil.copytree(phantom_root, tmp_path / "COVID-19_Radiography_Dataset")


def test_the_sheets_have_the_real_columns_and_names_and_their_urls_name_the_collections(phantom_root):
    for cls in CLASSES:
        sheet = pd.read_excel(phantom_root / sheet_name(cls))
        assert tuple(sheet.columns) == SHEET_COLUMNS and len(sheet) == 10
        assert set(sheet["FORMAT"]) == {"PNG"} and set(sheet["SIZE"]) == {"64*64"}
    assert pd.read_excel(phantom_root / "Normal.metadata.xlsx")["FILE NAME"][0] == "NORMAL-1"  # as the real sheet
    assert {name: collection(c.url) for name, c in COLLECTIONS.items()} == {name: name for name in COLLECTIONS}
    assert collection("https://github.com/armiro/COVID-CXNet") == "COVID-CXNet"
    assert collection("https://eurorad.org") == "Eurorad"
    assert collection("https://data.mendeley.com/datasets/rscbjbr9sj/2") == "Guangzhou"
    assert collection("https://www.example.org/covid/cases") == "example.org"  # unknown: the host
    assert collection(None) == collection(" ") == UNKNOWN


def test_names_are_matched_leniently_and_every_phantom_gets_its_collection(phantom_root):
    assert name_key("NORMAL-1") == name_key("Normal-1.png") == name_key(" normal-1.PNG") == "normal-1"
    assert name_key("Lung_Opacity-3") == name_key("Lung Opacity-3.png")
    assert name_key("Viral Pneumonia-12") != name_key("Viral Pneumonia-1")
    sources = _sources(phantom_root)
    assert sources.statement() == "Sources read from the metadata sheets: 40 of 40 images matched."
    truth = pd.read_csv(phantom_root / METADATA_NAME).set_index("relpath")["source"]
    assert sources.index.set_index("relpath")["source"].to_dict() == truth.to_dict()
    table = source_table(sources.index)
    assert table.loc["Viral Pneumonia", "Guangzhou"] == 10 and table.loc["Lung_Opacity", "RSNA"] == 10
    assert table.loc["all", "all"] == 40 and (table.loc["COVID", ["RSNA", "Guangzhou"]] == 0).all()


def test_the_best_rule_that_knows_only_the_source(phantom_root):
    """What 01 shows beside the age-only rule: the phantoms' sources alone separate COVID from Normal entirely, and
    three of the four classes (RSNA's Normal and Lung Opacity images share a source)."""
    counts = source_table(_sources(phantom_root).index, margins=False)
    assert "all" not in counts.index and counts.to_numpy().sum() == 40
    assert group_only_rules(counts.loc[["COVID", "Normal"]]).loc["most informed", "balanced accuracy"] == 1.0
    four = group_only_rules(counts).loc["most informed"]
    assert four["recall COVID"] == four["recall Viral Pneumonia"] == 1.0 and four["informedness"] > 0.6


def test_a_missing_sheet_is_said_and_its_class_degrades_to_unknown(tree):
    (tree / "Viral Pneumonia.metadata.xlsx").unlink()
    sources = _sources(tree)
    assert sources.missing == {"Viral Pneumonia": "absent"} and sources.known
    assert "no sheet for Viral Pneumonia (absent)" in sources.statement()
    by_class = sources.index.groupby("label")["source"]
    assert set(by_class.get_group("Viral Pneumonia")) == {UNKNOWN} and UNKNOWN not in set(by_class.get_group("COVID"))
    assert sources.unmatched_images == []  # a class without a sheet is said once, not image by image


def test_no_sheets_at_all_or_a_broken_one_never_crash(tree, capsys):
    (tree / "COVID.metadata.xlsx").write_bytes(b"not a workbook")
    for cls in CLASSES[1:]:
        (tree / sheet_name(cls)).unlink()
    sources = _sources(tree)
    assert not sources.known and set(sources.index["source"]) == {UNKNOWN}
    assert sources.missing["COVID"].startswith("unreadable")
    assert "every image's source is 'unknown'" in sources.statement()
    assert source_table(sources.index).loc["all", UNKNOWN] == 40
    assert main(["data", "check", str(tree)]) == 0
    assert "No usable metadata sheets" in capsys.readouterr().out


def test_rows_naming_no_file_and_files_in_no_row_are_counted_and_named(tree):
    rows = [(f"COVID-{n}", "PNG", "64*64", COLLECTIONS["SIRM"].url) for n in range(2, 11)]  # COVID-1 left out
    write_sheet(tree / "COVID.metadata.xlsx", rows + [("COVID-999", "PNG", "64*64", COLLECTIONS["SIRM"].url)])
    sources = _sources(tree)
    assert sources.unmatched_rows == [("COVID", "COVID-999")]
    assert sources.unmatched_images == ["COVID/images/COVID-1.png"]
    row = sources.index.set_index("relpath")["source"]
    assert row["COVID/images/COVID-1.png"] == UNKNOWN and row["COVID/images/COVID-2.png"] == "SIRM"
    said = sources.statement()
    assert "39 of 40 images matched" in said and "COVID-999" in said and "COVID/images/COVID-1.png" in said


def test_data_check_reports_images_per_class_and_source(phantom_root, capsys):
    assert main(["data", "check", str(phantom_root)]) == 0
    out = capsys.readouterr().out
    assert "Images per class and source:" in out and "Guangzhou" in out
    assert main(["data", "check", str(phantom_root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sources"]["per_class"]["Viral Pneumonia"] == {"Guangzhou": 10}


def test_a_styled_phantom_is_its_plain_twin_in_its_collections_style(tmp_path):
    plain = generate_phantoms(tmp_path / "plain", per_class=4, size=64)
    styled = generate_phantoms(tmp_path / "styled", per_class=4, size=64, collection_styles=True)
    rows = pd.read_csv(plain / METADATA_NAME)
    assert rows.equals(pd.read_csv(styled / METADATA_NAME))  # same collections, sheets, lesions
    for row in rows.itertuples():
        class_index, n = CLASSES.index(row.label), int(row.relpath.rsplit("-", 1)[1].split(".")[0])
        twin = np.asarray(Image.open(plain / row.relpath))
        expected = apply_style(twin, COLLECTIONS[row.source], np.random.default_rng([0, class_index, n, 3]))
        np.testing.assert_array_equal(np.asarray(Image.open(styled / row.relpath)), expected)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """The held-out-collection measurement on styled phantoms and on the same phantoms without styles."""
    out = tmp_path_factory.mktemp("held_out")
    return {styles: measure(generate_phantoms(out / str(styles), per_class=60, size=64, collection_styles=styles))
            for styles in (True, False)}


def test_on_planted_collections_the_unseen_one_scores_lower_and_the_pixels_tell_the_collection(measured):
    result = measured[True]
    assert result["held_out"]["high"] < result["random"]["low"], result
    assert result["probe"]["low"] > result["probe"]["chance"] + 0.2, result["probe"]
    assert result["verdicts"]["held_out_vs_random"].startswith("LOWER")
    assert result["verdicts"]["probe"] == "the pixels TELL the collection"


def test_without_collection_styles_neither_gap_appears(measured):
    """The test of the test: the same collections, named in the same sheets, but not in the pixels."""
    result = measured[False]
    held, rand = result["held_out"], result["random"]
    assert held["low"] <= rand["high"] and rand["low"] <= held["high"], result
    assert result["probe"]["accuracy"] < result["probe"]["chance"] + 0.1, result["probe"]
    assert result["verdicts"] == {"held_out_vs_random": "no measurable gap: the intervals overlap",
                                  "probe": "the pixels do not tell the collection beyond chance"}


def test_the_sources_own_table_and_split_are_the_functions(phantom_root):
    """What 07 calls: `Sources.table` (no totals) and `Sources.held_out_split` on its images or on a sample."""
    sources = _sources(phantom_root)
    assert sources.table.equals(source_table(sources.index, margins=False))
    described = sources.describe()  # issue 37's one shape: `.table` and `.describe()`, as every result type
    assert described.startswith(sources.statement()) and f"{len(sources.index)}" in described
    sample = sources.index.groupby("label").head(8)
    for rows in (None, sample):
        given = sources.index if rows is None else rows
        mine, theirs = sources.held_out_split("BIMCV", rows=rows), held_out_split(given, "BIMCV")
        for name in ("held_out", "random"):
            for part, same in zip(mine[name], theirs[name]):
                assert part.index.equals(same.index) and set(part.index) <= set(given.index)


@pytest.mark.parametrize("sheets", [True, False], ids=["with-sheets", "without-sheets"])
def test_07_runs_on_a_real_layout_tree_and_says_what_it_skips(phantom_root, tmp_path, monkeypatch, sheets):
    """07 on the real dataset's layout (no phantom manifest): with the sheets it measures; without them it says so in
    one line and skips the held-out test and the probe, and nothing crashes."""
    from tests.conftest import execute_notebook

    tree = shutil.copytree(phantom_root, tmp_path / "data" / "COVID-19_Radiography_Dataset")
    for extra in [*tree.glob("phantom_*"), *([] if sheets else tree.glob("*.metadata.xlsx"))]:
        extra.unlink()
    for name, value in {"CXR_FAST": "1", "CXR_DATA_DIR": str(tmp_path / "data"),
                        "CXR_OUTPUT_DIR": str(tmp_path / "outputs")}.items():
        monkeypatch.setenv(name, value)
    printed = execute_notebook("07_sources.ipynb")
    assert "This run uses the real COVID-19 Radiography Database" in printed
    if sheets:
        assert "Sources read from the metadata sheets: 40 of 40 images matched." in printed
        assert "which collection?" in printed and "skipped" not in printed
    else:
        assert "No usable metadata sheets" in printed
        assert "Fewer than two known COVID collections: sections 3 and 4 are skipped." in printed
        assert "which collection?" not in printed
