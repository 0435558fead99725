"""Controls that edit the images: the lungs hidden with one grey level, an equal area of the body hidden outside them
with the same pixel change, the pair's verdicts with bootstrap intervals, and a run scored under edits."""

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


def _chest(tmp_path, n=3, size=64):
    """Images like a radiograph: a black frame, a textured body, two darker lungs with texture; their masks."""
    from tests.conftest import write_png

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - 34) / 27) ** 2 + ((xx - 32) / 25) ** 2 < 1
    lungs = (((yy - 28) / 8) ** 2 + ((xx - 22) / 4) ** 2 < 1) | (((yy - 28) / 8) ** 2 + ((xx - 42) / 4) ** 2 < 1)
    pixels = np.where(body, 130 + rng.integers(-3, 4, (n, size, size)), 8)
    pixels = np.where(lungs, 60 + rng.integers(-6, 7, (n, size, size)), pixels).astype(np.uint8)
    masks = [str(write_png(tmp_path / f"chest{i}.png", lungs.astype(np.uint8) * 255)) for i in range(n)]
    return pixels, pd.DataFrame({"mask_path": masks}), lungs, body


def test_the_matching_control_hides_an_equal_area_of_the_body_with_the_lung_edits_pixel_change(tmp_path):
    from scipy.ndimage import label

    pixels, rows, lungs, body = _chest(tmp_path)
    edited, hidden = controls.outside_control(pixels, rows)
    np.testing.assert_array_equal(edited, controls.hide_outside_lungs(pixels, rows))  # seeded
    assert not hidden[:, lungs].any()  # the lungs untouched
    assert (hidden.sum(axis=(1, 2)) == lungs.sum()).all()  # as many pixels as the lungs cover
    assert not hidden[:, ~body].any(), "the black frame is not the body (the old control hid it first)"
    assert all(label(h)[1] >= 2 for h in hidden), "several regions, not one band"
    for image, mask, out in zip(pixels, hidden, edited):
        assert len(np.unique(out[mask])) == 1 and (out[~mask] == image[~mask]).all()  # one grey level, only there
    lung_change = controls.pixel_change(pixels, controls.hide_lungs(pixels, rows))
    np.testing.assert_allclose(controls.pixel_change(pixels, edited), lung_change, rtol=0.1)  # as big an edit
    assert (controls.outside_control(pixels, rows, seed=1)[1] != hidden).any()
    with pytest.raises(ValueError, match="need regions >= 1"):
        controls.hide_outside_lungs(pixels, rows, regions=0)


def _pair(n=30, outside_size=4.0):
    """Per-image labels, predictions and changes: each class's evidence where its name says."""
    lungs, outside = controls.LUNG_CONTROLS
    names = ["lungs", "outside", "alike", "guess"]
    labels = np.repeat(names, n)
    as_is = np.where(labels == "guess", np.resize(["lungs", "outside", "alike"], labels.size), labels)
    predicted = {"as is": as_is,
                 lungs: np.where(np.isin(labels, ["lungs", "alike"]), "guess", as_is),
                 outside: np.where(np.isin(labels, ["outside", "alike"]), "guess", as_is)}
    changes = {lungs: np.full(labels.size, 4.0), outside: np.full(labels.size, outside_size)}
    return labels, predicted, changes


def test_the_pair_states_where_the_evidence_is_only_when_intervals_and_sizes_support_it():
    verdicts = controls.pair_verdicts(*_pair())
    assert verdicts["evidence"].to_dict() == {"lungs": "in the lungs", "outside": "outside the lungs",
                                              "alike": "cannot tell", "guess": "not told apart"}
    assert verdicts.loc["lungs", "lungs hidden costs more"] and not verdicts.loc["lungs", "kept with the lungs hidden"]
    outside = verdicts.loc["outside"]
    assert outside["kept with the lungs hidden"] and outside["outside hidden costs more"]
    assert (verdicts["lungs hidden low"] <= verdicts["lungs hidden"]).all()
    assert "cost it alike within their 95% intervals" in verdicts.loc["alike", "verdict"]
    assert verdicts.loc["lungs", "verdict"].startswith("the evidence is in the lungs")
    pd.testing.assert_frame_equal(verdicts, controls.pair_verdicts(*_pair()))  # seeded
    # a bigger outside edit alone can cost more: then "outside" is not stated; "in the lungs" still is
    bigger = controls.pair_verdicts(*_pair(outside_size=6.0))
    assert bigger.loc["outside", "evidence"] == "cannot tell" and "differ in size" in bigger.loc["outside", "verdict"]
    assert bigger.loc["lungs", "evidence"] == "in the lungs"
    # few images: the points differ (recall 1.0 outside hidden, 0.67 lungs hidden) but the intervals do not separate
    labels, predicted, changes = _pair(n=6)
    predicted["lungs hidden"] = np.where((labels == "lungs") & (np.arange(labels.size) % 6 < 2), "guess",
                                         predicted["as is"])
    few = controls.pair_verdicts(labels, predicted, changes).loc["lungs"]
    assert few["lungs hidden"] < few["equal area outside hidden"] and few["evidence"] == "cannot tell"
    with pytest.raises(ValueError, match="no image of class 'other'"):
        controls.pair_verdicts(*_pair(), classes=["lungs", "other"])


def test_scores_give_the_pairs_verdicts_and_say_them():
    labels, predicted, changes = _pair()
    table = pd.DataFrame({(v, m): [0.5] * 5 for v in predicted for m in ("accuracy", "informedness")},
                         index=["lungs", "outside", "alike", "guess", "all"])
    scores = controls.EditScores(table, 0.25, labels, predicted, changes)
    verdicts = scores.verdicts
    assert list(verdicts.index) == ["lungs", "outside", "alike", "guess"]
    assert f"  lungs: {verdicts.loc['lungs', 'verdict']}" in scores.describe().splitlines()
    assert controls.EditScores(table.drop(columns="lungs hidden", level=0), 0.5).verdicts is None
    with pytest.raises(ValueError, match="score with score_edits"):
        _ = controls.EditScores(table, 0.25).verdicts


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
    assert table["darkened", "pixel change"].to_dict() == pytest.approx({"COVID": 220.5, "Normal": 9, "all": 150})
    described = scores.describe()
    assert "darkened: changes the images by 150.0 grey levels per pixel on average; accuracy 33%" in described
    assert "No class is told apart" in described
    assert "(always answering the largest class: 67%)" in described
    assert scores.verdicts is None and described.count("\n") == 1, "no lung controls, no verdicts"
    with pytest.raises(ValueError, match="1 image\\(s\\) could not be read"):
        controls.score_edits(run, rows.assign(path=[*rows["path"][:2], str(tmp_path / "missing.png")]))
    lungs = np.zeros((8, 8), np.uint8)
    lungs[2:6, 2:4] = 255
    masked = rows.assign(mask_path=[str(write_png(tmp_path / f"mask{i}.png", lungs)) for i in range(3)])
    paired = controls.score_edits(run, masked)  # the pair of lung controls, by default
    assert set(paired.verdicts["evidence"]) <= set(controls.EVIDENCE)
    assert paired.describe().count("grey levels per pixel") == 2, "each edit's pixel change, said"
