"""Controls that edit the images: the lungs hidden with one grey level, an equal area hidden outside them, the pair's
verdicts, and a run scored under edits."""

import numpy as np
import pandas as pd
import pytest

from helpers import controls


def _masked_rows(tmp_path, n=2, size=8):
    from tests.conftest import write_png

    lungs = np.zeros((size, size), np.uint8)
    lungs[2:6, 1:4] = 255
    return pd.DataFrame({"mask_path": [str(write_png(tmp_path / f"m{i}.png", lungs)) for i in range(n)]}), lungs > 0


def test_hide_lungs_fills_every_image_with_one_grey_level(tmp_path):
    rows, lungs = _masked_rows(tmp_path)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 8, 8), dtype=np.uint8)
    pixels[1][lungs] = 250  # a bright lesion filling one image's lungs must not survive as a brighter fill
    hidden = controls.hide_lungs(pixels, rows)
    np.testing.assert_array_equal(hidden[:, ~lungs], pixels[:, ~lungs])
    expected = round(float(np.concatenate([pixels[0][lungs], pixels[1][lungs]]).mean()))
    assert set(np.unique(hidden[:, lungs])) == {expected}  # one value for both images
    assert (controls.hide_lungs(pixels, rows, value=17)[:, lungs] == 17).all()
    assert (controls.black_lungs(pixels, rows)[:, lungs] == 0).all()
    with pytest.raises(ValueError, match="1 of 2 have none"):
        controls.hide_lungs(pixels, rows.assign(mask_path=[rows["mask_path"][0], None]))


def test_the_matching_control_hides_an_equal_area_outside_the_lungs_farthest_first(tmp_path):
    rows, lungs = _masked_rows(tmp_path)
    pixels = np.full((2, 8, 8), 100, np.uint8)
    pixels[:, lungs] = 30
    hidden = controls.hide_outside_lungs(pixels, rows)
    changed = hidden != pixels
    assert not changed[:, lungs].any()  # the lungs untouched
    assert (changed.sum(axis=(1, 2)) == lungs.sum()).all()  # as many pixels as the lungs cover
    assert set(np.unique(hidden[changed])) == {30}  # the same grey level as hide_lungs would use
    assert changed[:, :, -1].all()  # the lungs sit at columns 1-3: the far right edge goes first
    assert not changed[:, 3:5, 4].any()  # the pixels next to the lungs stay


def test_the_pair_of_lung_controls_concludes_only_what_it_supports():
    informedness = {"in lungs": (0.9, 0.05, 0.85), "outside": (0.6, 0.4, 0.1), "both": (0.9, 0.8, 0.9),
                    "edit": (0.9, 0.0, 0.1), "unclear": (0.9, 0.3, 0.85), "guessing": (0.1, 0.0, 0.0)}
    table = pd.DataFrame({(edit, measure): [v[i] for v in informedness.values()] + [0.0]
                          for i, edit in enumerate(["as is", *controls.LUNG_CONTROLS])
                          for measure in ("accuracy", "informedness")},
                         index=[*informedness, "all"])
    scores = controls.EditScores(table, majority_baseline=0.5)
    verdicts = scores.verdicts["verdict"]
    assert verdicts["in lungs"].endswith("the evidence is in the lungs")
    assert "the evidence is outside the lungs" in verdicts["outside"]  # 0.4 of 0.6 kept: more than half
    assert verdicts["both"].startswith("kept under both edits")
    assert "the pair cannot say" in verdicts["edit"]
    assert verdicts["unclear"].startswith("partly kept with the lungs hidden") and "does not settle" in verdicts[
        "unclear"]
    assert verdicts["guessing"].startswith("not told apart even as is")
    assert list(scores.verdicts.columns) == ["as is", *controls.LUNG_CONTROLS, "verdict"]
    assert f"  in lungs: {verdicts['in lungs']}" in scores.describe().splitlines()
    assert controls.EditScores(table.drop(columns="lungs hidden", level=0), 0.5).verdicts is None


def test_scores_under_edits_show_what_the_predictions_depend_on(tmp_path):
    """A run whose model calls bright images COVID: darkening the images turns every COVID into Normal."""
    import keras

    from tests.conftest import fake_run, write_png

    inputs = keras.Input((8, 8, 3))
    logits = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inputs))
    model = keras.Model(inputs, keras.layers.Softmax()(logits))
    model.layers[-2].set_weights([np.array([[1.0, -1.0]] * 3), np.array([-0.5, 0.5])])
    run = fake_run(tmp_path / "run", model, ["COVID", "Normal"], image_size=8)
    rows = pd.DataFrame({"path": [str(write_png(tmp_path / f"{v}.png", np.full((8, 8), v, np.uint8)))
                                  for v in (250, 240, 10)], "label": ["COVID", "COVID", "Normal"]})
    scores = controls.score_edits(run, rows, {"darkened": lambda pixels, _: pixels // 10}, watch_class="COVID")
    table = scores.table
    assert table.loc["all", ("as is", "accuracy")] == 1.0
    assert table.loc["COVID", ("darkened", "accuracy")] == 0.0 and table.loc["Normal", ("darkened", "accuracy")] == 1
    assert table.loc["all", ("as is", "predicted COVID")] == pytest.approx(2 / 3)
    called = scores.called("COVID")
    assert list(called.columns) == ["as is", "darkened"] and called.loc["Normal", "as is"] == 0.0
    assert called.loc["COVID", "darkened"] == 0.0 and called.loc["COVID", "as is"] == 1.0, "darkened: all Normal"
    with pytest.raises(ValueError, match="did not watch 'Normal': pass watch_class='Normal'"):
        scores.called("Normal")
    assert scores.majority_baseline == pytest.approx(2 / 3)
    assert table.loc["all", ("as is", "informedness")] == 1.0
    assert table.loc["all", ("darkened", "informedness")] == 0.0  # everything called Normal: nothing told apart
    described = scores.describe()
    assert "darkened: accuracy 33%" in described and "No class is told apart" in described
    assert "(always answering the largest class: 67%)" in described
    assert scores.verdicts is None and described.count("\n") == 1, "no lung controls, no verdicts"
    with pytest.raises(ValueError, match="1 image\\(s\\) could not be read"):
        controls.score_edits(run, rows.assign(path=[*rows["path"][:2], str(tmp_path / "missing.png")]))
