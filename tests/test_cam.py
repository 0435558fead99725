"""Class activation maps: CAM equals Grad-CAM on a linear head, maps peak where the evidence is,
batched equals per-image, shapes and ranges, and the localisation measures."""

import keras
import numpy as np
import pandas as pd
import pytest

from helpers import cam
from helpers.models import build_model


def tiny_model(head="linear", seed=0):
    """A small flat model with the course's layer names: conv features → gap → [fc] → logits → softmax."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="features")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    if head == "paper_a":
        x = keras.layers.Dense(5, activation="relu", name="fc1024")(x)
    logits = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inputs, keras.layers.Activation("softmax", name="probabilities")(logits))


IMAGES = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(np.float32)


def test_cam_equals_grad_cam_for_a_linear_head():
    model = tiny_model()
    raw = cam.maps(model, IMAGES, "cam", scaling=None)
    assert raw.maps.shape == (4, 16, 16, 3) and raw.classes == (0, 1, 2) and raw.class_names is None
    chosen = [0, 2, 1, 2]  # one class per image: that class's map of the every-class maps
    np.testing.assert_array_equal(cam.maps(model, IMAGES, "cam", chosen, scaling=None).maps,
                                  raw.maps[np.arange(4), ..., chosen])
    for k in range(3):
        expected = np.maximum(raw.maps[..., k], 0) / np.maximum(raw.maps[..., k], 0).max(axis=(1, 2), keepdims=True)
        grad = cam.maps(model, IMAGES, "grad-cam", class_names=k)
        assert grad.maps.shape == (4, 16, 16) and grad.class_names == (k,) * 4 and grad.method == "grad-cam"
        np.testing.assert_allclose(grad.maps, expected, atol=1e-5)


def test_maps_peak_where_the_pattern_is():
    """A hand-built model: one feature channel lights up on bright pixels and votes for class 1."""
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(1, 1, use_bias=False, name="features")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    logits = keras.layers.Dense(2, name="logits")(x)
    model = keras.Model(inputs, keras.layers.Activation("softmax", name="probabilities")(logits))
    model.get_layer("features").set_weights([np.ones((1, 1, 1, 1))])
    model.get_layer("logits").set_weights([np.array([[-1.0, 1.0]]), np.zeros(2)])
    image = np.zeros((1, 16, 16, 1), np.float32)
    image[0, 3:6, 10:13] = 1.0
    found = cam.maps(model, image)
    assert found.method == "cam" and found.layer == "features" and found.predicted == [1]
    maps = found.maps
    assert np.unravel_index(maps[0, ..., 1].argmax(), (16, 16))[0] in range(3, 6)
    assert maps[0, 4, 11, 1] == 1.0 and maps[0, 12, 2, 1] == 0.0
    gc = cam.maps(model, image, "grad-cam", class_names=[1]).maps
    assert gc[0, 4, 11] == 1.0 and gc[0, 12, 2] == 0.0


def test_batched_grad_cam_equals_one_image_at_a_time():
    model = tiny_model("paper_a")
    true_class = [0, 2, 1, 2]
    batched = cam.maps(model, IMAGES, "grad-cam", true_class).maps
    single = np.concatenate([cam.maps(model, IMAGES[i:i + 1], "grad-cam", true_class[i]).maps for i in range(4)])
    np.testing.assert_allclose(batched, single, atol=1e-6)
    for i, k in enumerate(true_class):  # each image's map is its own class's
        np.testing.assert_allclose(batched[i], cam.maps(model, IMAGES[i:i + 1], "grad-cam", k).maps[0], atol=1e-6)


def test_shapes_and_ranges_on_the_course_models():
    model = build_model("linear", n_classes=3, image_size=64, weights="none").model
    images = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)
    found = cam.maps(model, images)
    assert found.maps.shape == (2, 2, 2, 3) and found.maps.min() >= 0 and found.maps.max() <= 1
    assert found.layer == "conv5_block3_out" and found.probabilities.shape == (2, 3)
    assert found.upsampled(64).shape == (2, 64, 64, 3)
    paper_a = build_model("paper_a", n_classes=4, image_size=64, weights="none").model
    with pytest.raises(ValueError, match="CAM needs a linear head"):
        cam.maps(paper_a, images, "cam")
    finer = cam.maps(paper_a, images, layer="conv4_block5_out", class_names=3)
    assert finer.method == "grad-cam" and finer.layer == "conv4_block5_out"
    assert finer.maps.shape == (2, 4, 4) and 0 <= finer.maps.min() and finer.maps.max() <= 1
    assert finer.upsampled(64).shape == (2, 64, 64)


def test_maps_scale_as_asked_and_refuse_what_they_cannot_do():
    model = tiny_model()
    raw = cam.maps(model, IMAGES, "cam", scaling=None).maps
    low, high = raw.min(axis=(1, 2), keepdims=True), raw.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(cam.maps(model, IMAGES, "cam", scaling="minmax").maps, (raw - low) / (high - low))
    with pytest.raises(ValueError, match="scaling must be 'relu', 'minmax' or None; found 'max'"):
        cam.maps(model, IMAGES, scaling="max")
    with pytest.raises(ValueError, match=r"one per image \(4\); found 2"):
        cam.maps(model, IMAGES, class_names=[0, 1])
    with pytest.raises(ValueError, match=r"\['7'\] are not among the model's classes \[0, 1, 2\]"):
        cam.maps(model, IMAGES, class_names=7)


def test_pointing_game_and_energy_inside_masks():
    maps = np.zeros((2, 4, 4))
    maps[0, 1, 1], maps[0, 3, 3] = 3.0, 1.0
    maps[1, 0, 0] = 1.0
    masks = np.zeros((2, 4, 4), bool)
    masks[:, :2, :2] = True
    masks[1] = False
    masks[1, 2:, 2:] = True
    hit, chance = cam.pointing_game(maps, masks)
    np.testing.assert_array_equal(hit, [1.0, 0.0])
    np.testing.assert_allclose(chance, 4 / 16)  # no lung masks: a random cell of the image
    np.testing.assert_allclose(cam.energy_inside(maps, masks), [0.75, 0.0])
    assert np.isnan(cam.energy_inside(np.zeros((1, 4, 4)), masks[:1]))[0]


def test_the_pointing_game_is_scored_on_the_maps_own_grid():
    """A 2 × 2 map over 8 × 8 masks: the hottest cell is one of four, whatever upsampling would draw. A lesion in
    the top-left quadrant, lungs in the left half: a random lung cell is on the lesion half the time."""
    lesion, lungs = np.zeros((3, 8, 8), bool), np.zeros((3, 8, 8), bool)
    lesion[:, 1:3, 1:3], lungs[:, :, :4] = True, True
    maps = np.zeros((3, 2, 2))
    maps[0, 0, 0] = 1.0  # on the lesion's cell
    maps[1, 0, 1] = 1.0  # beside it
    hit, chance = cam.pointing_game(maps, lesion, lungs)  # the third map is empty: it points at nothing
    np.testing.assert_array_equal(hit, [1.0, 0.0, 0.0])
    np.testing.assert_allclose(chance, 0.5)
    np.testing.assert_array_equal(cam.cells_touched(lesion[:1], (2, 2))[0], [[True, False], [False, False]])
    uneven = np.zeros((1, 7, 7), bool)
    uneven[0, 6, 6] = True  # 7 pixels over 3 cells: the last pixel belongs to the last cell
    assert cam.cells_touched(uneven, (3, 3))[0].sum() == 1 and cam.cells_touched(uneven, (3, 3))[0, 2, 2]


def test_grad_cam_of_every_class_equals_one_class_at_a_time():
    model = tiny_model("paper_a")
    every = cam.maps(model, IMAGES, "grad-cam")
    assert every.maps.shape == (4, 16, 16, 3) and every.probabilities.shape == (4, 3)
    np.testing.assert_allclose(every.probabilities, model.predict(IMAGES, verbose=0), atol=1e-5)
    for k in range(3):
        np.testing.assert_allclose(every.maps[..., k], cam.maps(model, IMAGES, "grad-cam", k).maps, atol=1e-5)


def test_auto_method_uses_cam_only_where_it_is_defined():
    linear, paper_a = tiny_model("linear"), tiny_model("paper_a")
    assert cam.maps(linear, IMAGES).method == "cam"
    assert cam.maps(paper_a, IMAGES).method == "grad-cam"
    assert cam.maps(linear, IMAGES, layer="features").method == "grad-cam"
    with pytest.raises(ValueError, match="last convolutional block only"):
        cam.maps(linear, IMAGES, "cam", layer="features")
    with pytest.raises(ValueError, match="method must be one of 'auto', 'cam', 'grad-cam'; found 'gradcam'"):
        cam.maps(linear, IMAGES, "gradcam")
    np.testing.assert_allclose(cam.maps(linear, IMAGES).maps, cam.maps(linear, IMAGES, "cam").maps, atol=1e-6)


# --------------------------------------------------------------------------- a (fabricated) run on known images

SIZE = 16


def brightness_model():
    """CAM of COVID = the image's brightness: a bright lesion is COVID evidence, exactly where it is."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(1, 1, use_bias=False, name="features")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    logits = keras.layers.Dense(2, name="logits")(x)
    model = keras.Model(inputs, keras.layers.Activation("softmax", name="probabilities")(logits))
    model.get_layer("features").set_weights([np.full((1, 1, 3, 1), 1 / 3)])
    model.get_layer("logits").set_weights([np.array([[1.0, -1.0]]), np.array([-0.02, 0.02])])
    return model


@pytest.fixture
def known_run(tmp_path):
    """A run of the brightness model, and images whose lesion (a bright square) and lungs are known."""
    from tests.conftest import fake_run, write_png

    run = fake_run(tmp_path / "run", brightness_model(), ["COVID", "Normal"], image_size=SIZE)
    rows = []
    for n, (label, corner) in enumerate([("COVID", (2, 2)), ("COVID", (9, 8)), ("Normal", None)]):
        image, lesion, lungs = (np.zeros((SIZE, SIZE), np.uint8) for _ in range(3))
        lungs[:, :SIZE // 2 + 4] = 255
        if corner:
            lesion[corner[0]:corner[0] + 4, corner[1]:corner[1] + 4] = 255
            image[lesion > 0] = 255
        rows.append({"path": str(write_png(tmp_path / f"img{n}.png", image)), "label": label,
                     "mask_path": str(write_png(tmp_path / f"lungs{n}.png", lungs)),
                     "lesion_mask_path": str(write_png(tmp_path / f"lesion{n}.png", lesion))})

    return run, pd.DataFrame(rows)


def test_localisation_scores_a_map_against_known_lesions_and_lungs(known_run):
    run, rows = known_run
    marker = np.zeros((SIZE, SIZE), bool)
    marker[0, -2:] = True
    found = cam.localise(run, rows, regions={"corner": marker}, batch_size=2)
    table, summary = found.table, found.summary
    assert list(table["predicted"]) == ["COVID", "COVID", "Normal"]
    np.testing.assert_array_equal(table["pointing_game"].iloc[:2], [1.0, 1.0])
    assert np.isnan(table["pointing_game"].iloc[2]) and np.isnan(table["lesion_energy"].iloc[2])
    np.testing.assert_allclose(table["lesion_energy"].iloc[:2], 1.0, atol=0.02)  # all the map is on the lesion
    np.testing.assert_allclose(table["lesion_area"], [16 / 256, 16 / 256, 0.0])
    np.testing.assert_allclose(table["lesion_share_of_lungs"].iloc[:2], 16 / 192)  # lungs: 12 of 16 columns
    np.testing.assert_allclose(table["lesion_energy_of_lungs"].iloc[:2], 1.0, atol=0.02)
    np.testing.assert_allclose(table["lungs_area"], 12 / 16)
    assert table["lungs_energy"].iloc[0] == pytest.approx(1.0, abs=0.02)
    assert summary.loc["all", "images"] == 3 and summary.loc["all", "accuracy"] == 1.0
    # "does it find the lesion" is judged against the lesion's share of the lungs, where lesions lie
    # Normal has no lesion: not counted
    assert found.chance("lesion's part of lungs' energy") == pytest.approx(16 / 192)
    assert found.chance("energy in corner") == pytest.approx(2 / 256) and found.overall["accuracy"] == 1.0
    assert found.chance("energy in lungs", row="COVID") == pytest.approx(12 / 16)
    assert found.chance("pointing game") == pytest.approx(summary.loc["all", "chance: a random lung cell"])
    with pytest.raises(ValueError, match="no chance level for 'accuracy'; the measures with one are"):
        found.chance("accuracy")
    assert summary.loc["all", "images with a lesion"] == 2
    assert {"energy in corner", "chance: corner's share of image", "energy in lungs",
            "chance: lungs' share of image"} <= set(summary.columns)
    described = found.describe()
    assert "hottest cell lay on the lesion in 100% of the 2 images" in described
    assert "on the lesion in most images, above a random lung cell" in described
    assert "Of the map's energy inside the lungs, 100.0% lies in the lesion" in described
    summary.loc["all", ["images with a lesion", "pointing game"]] = 100, 0.25  # 95% interval 17%–34%, chance 8%
    assert "rough region" in found.describe()
    summary.loc["all", "pointing game"] = 0.12  # 5.8× the image-wide level (2%), but the interval 7%–20% holds 8%
    assert "does NOT find the lesion more often than a random lung cell" in found.describe()
    summary.loc["all", "chance: a random lung cell"] = 0.5
    assert found.chance("pointing game") == 0.5
    assert "LESS often than a random lung cell" in found.describe("These maps")
    assert found.describe("These maps").startswith("These maps: accuracy 100% on 3 images.")


def test_a_map_with_no_evidence_is_counted_and_scores_zero_over_the_same_images(known_run, tmp_path):
    """The Normal image is black: its map is empty. Labelled COVID with a lesion, it must count as a miss, not
    drop out of the averages (which would leave the measure and its chance level over different images)."""
    run, rows = known_run
    rows = pd.concat([rows, rows.iloc[[2]].assign(label="COVID", lesion_mask_path=rows["lesion_mask_path"][0])],
                     ignore_index=True)
    found = cam.localise(run, rows)
    table, summary = found.table, found.summary
    assert list(table["empty_map"]) == [False, False, True, True]
    assert table["pointing_game"].iloc[3] == 0 and table["lesion_energy"].iloc[3] == 0
    assert table["lesion_energy_of_lungs"].iloc[3] == 0
    assert table["lungs_energy"].iloc[2] == 0  # a Normal image with an empty map: no energy in the lungs either
    assert summary.loc["all", "maps with no evidence"] == 2 and summary.loc["COVID", "maps with no evidence"] == 1
    assert summary.loc["all", "pointing game"] == pytest.approx(2 / 3)  # over the 3 images with a lesion
    assert found.chance("lesion's part of lungs' energy") == pytest.approx(16 / 192)  # over the same 3
    assert "2 of 4 maps have no positive evidence" in found.describe()


def test_localisation_refuses_labels_the_run_does_not_know(known_run):
    run, rows = known_run
    with pytest.raises(ValueError, match="was not trained on"):
        cam.localise(run, rows.assign(label="Viral Pneumonia"))


def test_overlays_are_written_per_image_and_bad_files_reported(known_run, tmp_path):
    run, rows = known_run
    same_name = tmp_path / "elsewhere" / "img0.png"
    same_name.parent.mkdir()
    same_name.write_bytes((tmp_path / "img0.png").read_bytes())
    table = cam.write_overlays(run, [*rows["path"], str(same_name), str(tmp_path / "missing.png")],
                               tmp_path / "maps")
    written = table["overlay"].dropna()
    assert len(written) == 4 and len(set(written)) == 4
    assert all(p.endswith("_cam.png") and (tmp_path / "maps" / p.rsplit("/", 1)[-1]).stat().st_size > 0
               for p in written)
    assert table["error"].iloc[-1] == "file not found" and pd.isna(table["overlay"].iloc[-1])


def test_the_last_block_of_a_stage_is_three_quarters_blind_and_refused():
    """ResNet50's next stage reads the last block of a stage through stride-2 1×1 convolutions: one cell in four."""
    model = build_model("linear", n_classes=3, image_size=128, weights="none").model
    assert cam.live_cells(model, "conv4_block6_out") == (16, 64)
    assert cam.live_cells(model, "conv3_block4_out") == (64, 256)
    for layer in cam.FINER_LAYERS:
        live, total = cam.live_cells(model, layer)
        assert live == total
    images = np.zeros((1, 128, 128, 3), np.float32)
    with pytest.raises(ValueError, match="only 16 of its 64 cells .* use a layer whose every cell is live, e.g. "
                                         "conv4_block5_out"):
        cam.maps(model, images, "grad-cam", layer="conv4_block6_out")


def test_cam_and_grad_cam_are_scaled_alike_so_they_agree_as_shown_and_scored():
    model = tiny_model()
    cam_maps = cam.maps(model, IMAGES, "cam").maps
    grad_maps = cam.maps(model, IMAGES, "grad-cam").maps
    np.testing.assert_allclose(cam_maps, grad_maps, atol=1e-5)
    assert cam_maps.min() == 0.0 and cam_maps.max() == 1.0


def test_a_model_saved_under_mixed_precision_gives_the_maps_of_its_float32_twin(tmp_path):
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = tiny_model("paper_a", seed=3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    mixed.save(tmp_path / "mixed.keras")
    loaded = keras.models.load_model(tmp_path / "mixed.keras")
    twin = tiny_model("paper_a", seed=3)
    twin.set_weights(loaded.get_weights())
    assert loaded.get_layer("features").compute_dtype == "float16"
    for k in range(3):
        np.testing.assert_allclose(cam.maps(loaded, IMAGES, "grad-cam", k).maps,
                                   cam.maps(twin, IMAGES, "grad-cam", k).maps, atol=1e-5)


# --------------------------------------------------------------------------- position alone: the class-keeping null


def zoned_lesions(n_per_class=150, seed=0):
    """16 × 16 images, lungs everywhere; each class's 4 × 4 lesion lies somewhere in its own quarter, as the
    phantoms' findings lie in class-specific zones. Returns lesions (N, 16, 16), lungs and labels."""
    rng = np.random.default_rng(seed)
    lesions, labels = [], []
    for label, (top, left) in {"A": (0, 0), "B": (8, 8)}.items():
        for _ in range(n_per_class):
            y, x = top + rng.integers(0, 5), left + rng.integers(0, 5)
            mask = np.zeros((16, 16), bool)
            mask[y:y + 4, x:x + 4] = True
            lesions.append(mask)
            labels.append(label)
    lesions = np.array(lesions)
    return lesions, np.ones_like(lesions), np.array(labels, dtype=object)


def scored_table(maps, lesions, lungs, labels, training=None) -> pd.DataFrame:
    """A `localise`-like table of 4 × 4 maps (their upsampled energy too), from the module's functions alone."""
    hit, chance = cam.pointing_game(maps, lesions, lungs)
    shown = np.repeat(np.repeat(maps, 4, axis=1), 4, axis=2)
    table = pd.DataFrame({"label": labels, "pointing_game": hit, "pointing_chance": chance,
                          "pointing_null": cam.pointing_null(maps, labels, lesions, labels, np.arange(len(maps))),
                          "lesion_energy": cam.energy_inside(shown, lesions),
                          "lesion_energy_of_lungs": cam.energy_inside(shown * lungs, lesions),
                          "lesion_share_of_lungs": lesions.mean(axis=(1, 2)),
                          "energy_null": cam.energy_null(shown * lungs, labels, lesions, labels, np.arange(len(maps)))})
    if training is not None:
        fixed = cam.fixed_class_maps(*training, (4, 4))
        cells = cam.cells_touched(lesions, (4, 4)).reshape(len(lesions), -1)
        table["pointing_fixed"] = [cells[i, fixed[label].argmax()] for i, label in enumerate(labels)]
    return table


def test_the_class_keeping_null_rejects_a_fixed_class_map_that_a_random_lung_cell_accepts():
    """A map that never sees the image, its hottest cell the cell where its class's training lesions most often lie,
    hits most test lesions: far above a random lung cell. Against the same map scored on the other lesions of its
    class it gains nothing: it knows where the class's lesions usually are, and does not find the lesion."""
    lesions, lungs, labels = zoned_lesions()
    train_lesions, _, train_labels = zoned_lesions(seed=1)
    fixed = cam.fixed_class_maps(train_lesions, train_labels, (4, 4))
    assert set(fixed) == {"A", "B"} and fixed["A"].argmax() in (0, 1, 4, 5) and fixed["B"].argmax() in (10, 11, 14, 15)
    blind = np.stack([fixed[label] for label in labels])  # the same map for every image of a class
    table = scored_table(blind, lesions, lungs, labels, training=(train_lesions, train_labels))
    found = cam.Localisation(table.assign(correct=True), cam._summary(table.assign(correct=True)))
    assert found.overall["pointing game"] > 0.5 > 0.2 > found.chance("pointing game")  # the lungs' bar: passed
    assert found.chance("pointing game", level="class") == pytest.approx(found.overall["pointing game"], abs=0.02)
    assert found.chance("pointing game", level="fixed") == pytest.approx(found.overall["pointing game"])
    verdicts = found.verdicts
    assert (verdicts["verdict"] == cam.KNOWS).all(), verdicts
    assert verdicts.loc[("all", "pointing game"), "map − lungs only: low"] > 0.3
    described = found.describe()
    assert "above a random lung cell" in described and "Verdict (pointing game), per class: A: knows where" in described
    assert "finds the lesion" not in described

    # a map that peaks on each image's own lesion beats the null; one that peaks anywhere at random beats neither
    own = cam.cells_touched(lesions, (4, 4)).astype(float) * np.random.default_rng(2).uniform(size=(len(labels), 4, 4))
    assert (cam.lesion_verdicts(scored_table(own, lesions, lungs, labels))["verdict"] == cam.FINDS).all()
    lesions, lungs, labels = zoned_lesions(n_per_class=600)  # narrow intervals: "neither" is a finding, not a shrug
    anywhere = np.random.default_rng(3).uniform(size=(len(labels), 4, 4))
    verdicts = cam.lesion_verdicts(scored_table(anywhere, lesions, lungs, labels))
    assert (verdicts.xs("pointing game", level="measure")["verdict"] == cam.NEITHER).all(), verdicts
    few = scored_table(anywhere[::120], lesions[::120], lungs[::120], labels[::120])  # 5 images per class
    assert (cam.lesion_verdicts(few).drop(index="all", level="class")["verdict"] == cam.CANNOT_SAY).all()


def test_the_null_scores_each_map_against_the_other_lesions_of_its_class_only():
    maps = np.zeros((3, 2, 2))
    maps[:, 0, 0] = 1.0  # every map peaks top-left
    lesions = np.zeros((4, 4, 4), bool)
    lesions[0, :2, :2] = lesions[1, 2:, 2:] = lesions[2, :2, :2] = lesions[3, :2, :2] = True
    # maps 0 and 1 are of class A (masks 0 and 1), map 2 of B (mask 2); mask 3 is another B image with no map
    null = cam.pointing_null(maps, ["A", "A", "B"], lesions, ["A", "A", "B", "B"], own=[0, 1, 2])
    np.testing.assert_array_equal(null, [0.0, 1.0, 1.0])  # map 0 vs mask 1 (missed); map 1 vs mask 0 (hit)
    assert np.isnan(cam.pointing_null(maps[:1], ["C"], lesions, ["A", "A", "B", "B"]))[0]  # no other lesion
    shown = np.repeat(np.repeat(maps, 2, axis=1), 2, axis=2)
    np.testing.assert_allclose(cam.energy_null(shown, ["A", "A", "B"], lesions, ["A", "A", "B", "B"], [0, 1, 2]),
                               [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="one label per lesion mask"):
        cam.pointing_null(maps, ["A", "A", "B"], lesions, ["A"])
    with pytest.raises(ValueError, match="level must be one of 'lungs', 'class', 'fixed'; found 'random'"):
        cam._chance_columns([], "random")


def test_localise_scores_each_map_against_the_other_lesions_of_its_class_and_a_fixed_map(known_run):
    """The brightness map is on its own lesion and on no other: it beats the null. The fixed COVID map from these
    two lesions (each cell touched by one of them half the time) peaks on the first lesion's corner."""
    run, rows = known_run
    found = cam.localise(run, rows, batch_size=2, training=rows)  # the null crosses the batches
    table = found.table
    np.testing.assert_array_equal(table["pointing_null"].iloc[:2], [0.0, 0.0])
    np.testing.assert_allclose(table["energy_null"].iloc[:2], 0.0, atol=0.02)
    np.testing.assert_array_equal(table["pointing_fixed"].iloc[:2], [1.0, 0.0])
    np.testing.assert_allclose(table["energy_fixed"].iloc[:2], 0.5, atol=0.01)
    assert table[["pointing_null", "pointing_fixed"]].iloc[2].isna().all()  # Normal: no lesion
    assert found.chance("pointing game", level="class") == 0 and found.chance("pointing game", level="fixed") == 0.5
    assert found.chance("lesion's part of lungs' energy", level="class") == pytest.approx(0.0, abs=0.02)
    assert found.chance("lesion's part of lungs' energy", level="fixed") == pytest.approx(0.5, abs=0.01)
    assert found.verdicts.loc[("COVID", "pointing game"), "verdict"] == cam.CANNOT_SAY  # two images: too few
    assert "Verdict (pointing game), per class: COVID: cannot say" in found.describe()
    assert "The lesion's part of lungs' energy: 100.0%; on the other lesions of its class, 0." in found.describe()
    assert "pointing_null" in cam.localise(run, rows).table and "pointing_fixed" not in cam.localise(run, rows).table
    with pytest.raises(ValueError, match="no 'fixed' level for 'pointing game'"):
        cam.localise(run, rows).chance("pointing game", level="fixed")
    with pytest.raises(ValueError, match="training: the fixed maps are learned from lesion masks"):
        cam.localise(run, rows, training=rows.drop(columns="lesion_mask_path"))


def test_a_map_above_its_class_null_but_not_above_an_even_spread_does_not_find_the_lesion():
    """Above the class-keeping null yet below a map spread over the lungs (the demo's COVID energy share once looked
    so): following each image's own lesion a little is not finding it."""
    rng = np.random.default_rng(0)
    n = 60
    table = pd.DataFrame({
        "label": "A",
        "pointing_game": (rng.uniform(size=n) < 0.5).astype(float), "pointing_chance": np.full(n, 0.8),
        "pointing_null": np.full(n, 0.2),
        "lesion_energy_of_lungs": np.full(n, 0.30), "lesion_share_of_lungs": np.full(n, 0.40),
        "energy_null": np.full(n, 0.10)})
    verdicts = cam.lesion_verdicts(table)
    assert (verdicts["map − null: low"] > 0).all() and (verdicts["map − lungs only: high"] < 0).all(), verdicts
    assert not (verdicts["verdict"] == cam.FINDS).any(), verdicts
