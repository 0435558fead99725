"""Finding the dataset: current Kaggle layout, older flat layouts, and clear errors otherwise."""

import pytest

from helpers import config
from helpers.datasets import DatasetError, find_dataset, find_real_dataset
from helpers.tasks import CLASSES, canonical_class


@pytest.mark.parametrize(
    "folder, expected",
    [
        ("COVID", "COVID"), ("COVID-19", "COVID"), ("covid19", "COVID"),
        ("NORMAL", "Normal"), ("Normal", "Normal"),
        ("Viral Pneumonia", "Viral Pneumonia"), ("Viral_Pneumonia", "Viral Pneumonia"),
        ("Lung_Opacity", "Lung_Opacity"), ("Lung Opacity", "Lung_Opacity"),
        ("images", None), ("masks", None), ("pneumonia", None),
    ],
)
def test_folder_names_of_every_release_map_to_canonical_classes(folder, expected):
    assert canonical_class(folder) == expected


def test_current_kaggle_layout_is_found_from_any_level_above(make_tree):
    download = make_tree()
    for start in (download, download / "COVID-19_Radiography_Dataset"):
        layout = find_dataset(start)
        assert layout.layout == "kaggle"
        assert layout.root.name == "COVID-19_Radiography_Dataset"
        assert layout.classes == CLASSES
        assert layout.image_dirs["COVID"].name == "images"
        assert layout.mask_dirs["Normal"].name == "masks"


def test_older_flat_layout_with_old_folder_names(make_tree):
    names = {"COVID": "COVID-19", "Normal": "NORMAL", "Viral Pneumonia": "Viral Pneumonia"}
    download = make_tree({c: 2 for c in names}, layout="flat", names=names,
                         top="COVID-19 Radiography Database")
    layout = find_dataset(download, classes=("COVID", "Normal", "Viral Pneumonia"))
    assert layout.layout == "flat"
    assert layout.folder_names == names
    assert layout.mask_dirs == {}
    assert layout.image_dirs["COVID"].name == "COVID-19"


def test_missing_class_names_what_was_expected_and_found(make_tree):
    download = make_tree({"COVID": 2, "Normal": 2, "Viral Pneumonia": 2})
    with pytest.raises(DatasetError) as error:
        find_dataset(download)
    message = str(error.value)
    assert "missing class(es) Lung_Opacity" in message
    assert "expected folders for COVID, Lung_Opacity, Normal, Viral Pneumonia" in message
    assert "found COVID" in message
    # …while a 3-class task needs only its own classes.
    assert find_dataset(download, classes=("COVID", "Normal", "Viral Pneumonia")).classes == (
        "COVID", "Normal", "Viral Pneumonia")


def test_unknown_layout_lists_what_is_there(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"unknown layout .*expected class folders named .*"
                                           r"found \['cats/', 'dogs/', 'notes.txt'\]"):
        find_dataset(tmp_path)


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        find_dataset(tmp_path / "nowhere")


def test_two_folders_for_one_class_is_ambiguous(make_tree):
    download = make_tree()
    (download / "COVID-19_Radiography_Dataset" / "COVID-19").mkdir()
    with pytest.raises(DatasetError, match="two folders .* map to class 'COVID'"):
        find_dataset(download)


def test_real_dataset_search_ignores_generated_phantoms(tmp_path, monkeypatch, phantom_root):
    import shutil

    data_dir = tmp_path / "data"
    monkeypatch.setattr(config, "PHANTOM_DIR", data_dir / "phantoms")
    shutil.copytree(phantom_root, data_dir / "phantoms" / phantom_root.name)
    shutil.copytree(phantom_root, data_dir / "my-own-phantoms" / phantom_root.name)
    assert find_real_dataset(data_dir) is None
    shutil.copytree(phantom_root / "COVID", data_dir / "real" / "COVID")
    with pytest.raises(DatasetError, match="missing class"):  # half-placed data is loud, not ignored
        find_real_dataset(data_dir)
    for cls in CLASSES[1:]:
        shutil.copytree(phantom_root / cls, data_dir / "real" / cls)
    assert find_real_dataset(data_dir).root == data_dir / "real"
