"""Run profiles: chosen from the environment and the hardware, overridable, and saying why."""

import json

import pytest

from helpers import config
from helpers.cli import main
from helpers.config import choose_profile
from helpers.engine import devices


def never_called():
    raise AssertionError("the GPU check must not run when an environment variable decides")


@pytest.mark.parametrize("env, gpu, name, reason", [
    ({"CXR_FAST": "1"}, never_called, "fast", "CXR_FAST=1"),
    ({"CXR_PROFILE": "full"}, never_called, "full", "CXR_PROFILE=full"),
    ({"CXR_PROFILE": "demo", "CXR_FAST": "1"}, never_called, "demo", "CXR_PROFILE=demo"),
    ({}, lambda: True, "full", "a GPU is visible"),
    ({}, lambda: False, "demo", "no GPU visible"),
    ({"CXR_FAST": "0"}, lambda: False, "demo", "no GPU visible"),
])
def test_profile_choice_and_its_reason(env, gpu, name, reason):
    profile = choose_profile(env, has_gpu=gpu)
    assert profile.name == name
    assert profile.reason.startswith(reason)
    assert reason in profile.describe()


def test_fast_profile_is_small_and_offline():
    fast = choose_profile({"CXR_FAST": "1"})
    assert fast.image_size <= 64 and fast.epochs == 1 and fast.weights == "none"


def test_environment_variables_override_single_fields():
    profile = choose_profile({"CXR_FAST": "1", "CXR_IMAGE_SIZE": "96", "CXR_WEIGHTS": "imagenet"})
    assert (profile.image_size, profile.weights) == (96, "imagenet")
    assert "overridden by CXR_IMAGE_SIZE=96, CXR_WEIGHTS=imagenet" in profile.reason


@pytest.mark.parametrize("env, message", [
    ({"CXR_PROFILE": "turbo"}, "CXR_PROFILE must be one of fast, demo, full; found 'turbo'"),
    ({"CXR_FAST": "1", "CXR_EPOCHS": "many"}, "CXR_EPOCHS must be a positive whole number; found 'many'"),
    ({"CXR_FAST": "1", "CXR_EPOCHS": "0"}, "CXR_EPOCHS must be a positive whole number; found '0'"),
    ({"CXR_FAST": "1", "CXR_REAL_PER_CLASS": "-3"}, "CXR_REAL_PER_CLASS must be a whole number ≥ 0"),
    ({"CXR_FAST": "1", "CXR_WEIGHTS": "imagnet"}, "CXR_WEIGHTS must be one of imagenet, none or an existing"),
])
def test_bad_settings_say_what_was_expected(env, message):
    with pytest.raises(ValueError, match=message):
        choose_profile(env)


def test_a_recipe_without_early_stopping_trains_the_profiles_fixed_epochs():
    from helpers.engine.training import profile_epochs
    from helpers.recipes import PAPER_A, PAPER_B

    demo = choose_profile({}, has_gpu=False)
    assert demo.fixed_epochs <= demo.epochs  # Paper B pays for every epoch: the demo never trains it longer
    assert (profile_epochs(PAPER_A, demo), profile_epochs(PAPER_B, demo)) == (demo.epochs, demo.fixed_epochs)
    as_epochs = choose_profile({"CXR_FAST": "1", "CXR_EPOCHS": "5", "CXR_FIXED_EPOCHS": "0"})
    assert profile_epochs(PAPER_B, as_epochs) == 5
    with pytest.raises(ValueError, match=r"CXR_FIXED_EPOCHS must be a whole number ≥ 0 \(0: as epochs\)"):
        choose_profile({"CXR_FAST": "1", "CXR_FIXED_EPOCHS": "-1"})


def test_zero_means_all_where_it_can():
    assert choose_profile({"CXR_FAST": "1", "CXR_REAL_PER_CLASS": "0"}).real_per_class == 0


def test_demo_on_a_cpu_trains_on_a_stated_sample_of_the_real_data_and_full_on_all():
    assert choose_profile({}, has_gpu=False).real_per_class > 0
    assert choose_profile({}, has_gpu=True).real_per_class == 0


def test_profile_cli_says_what_is_wrong_with_a_setting_in_one_line(capsys, monkeypatch):
    monkeypatch.setenv("CXR_PROFILE", "turbo")
    assert main(["profile"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: CXR_PROFILE must be one of") and error.count("\n") == 1


def test_profile_cli_prints_the_active_profile(capsys, monkeypatch):
    monkeypatch.setenv("CXR_FAST", "1")
    monkeypatch.delenv("CXR_PROFILE", raising=False)
    assert main(["profile", "--json"]) == 0
    profile = json.loads(capsys.readouterr().out)
    assert profile["name"] == "fast" and "CXR_FAST=1" in profile["reason"]
    assert profile["device_policy"] == devices.device_policy().to_dict()
    assert main(["profile"]) == 0
    assert capsys.readouterr().out.endswith(f"training device policy: {devices.device_policy().reason}\n")


@pytest.mark.parametrize("env, named", [({}, None), ({"CXR_FAST": "0"}, None), ({"CXR_FAST": "1"}, "CXR_FAST=1"),
                                        ({"CXR_PROFILE": "Demo", "CXR_FAST": "1"}, "CXR_PROFILE=demo")])
def test_what_named_the_profile(env, named):
    """The command line keeps a profile's data caps only when someone named the profile."""
    assert config.profile_named(env) == named


def test_use_profile_sets_it_for_the_whole_process(monkeypatch):
    monkeypatch.setenv("CXR_PROFILE", "")  # restored after the test
    try:
        assert config.use_profile("full").name == "full" == config.active_profile().name
        assert config.active_profile().reason == "CXR_PROFILE=full"
        with pytest.raises(ValueError, match="one of fast, demo, full"):
            config.use_profile("quick")
    finally:
        config.active_profile.cache_clear()


def test_keep_outputs_on_drive_is_chosen_once_in_the_setup_cell_and_a_late_change_is_said(monkeypatch):
    """On Colab the setup cell's KEEP_OUTPUTS_ON_DRIVE reaches helpers as CXR_KEEP_OUTPUTS_ON_DRIVE: importing helpers
    mounts Drive and keeps every notebook's outputs there. Changed after the import, it would be ignored: said."""
    import sys
    import types

    mounted = []
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mounted.append)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.delenv("CXR_OUTPUT_DIR", raising=False)
    monkeypatch.setenv("CXR_KEEP_OUTPUTS_ON_DRIVE", "1")
    assert config._output_dir() == config.DRIVE_OUTPUTS and mounted == ["/content/drive"]
    monkeypatch.setenv("CXR_KEEP_OUTPUTS_ON_DRIVE", "0")
    assert config._output_dir() == config.REPO_ROOT / "outputs" and len(mounted) == 1

    monkeypatch.setattr(config, "OUTPUT_DIR", config.REPO_ROOT / "outputs")  # imported before it was set
    assert config.outputs_not_as_asked() is None
    monkeypatch.setenv("CXR_KEEP_OUTPUTS_ON_DRIVE", "1")
    late = config.outputs_not_as_asked()
    assert late.startswith("KEEP_OUTPUTS_ON_DRIVE is now True, but helpers was imported before") and "Restart" in late
    assert devices.device_report().startswith(f"WARNING: {late}\n")
    monkeypatch.setattr(config, "OUTPUT_DIR", config.DRIVE_OUTPUTS)
    assert config.outputs_not_as_asked() is None

    # Chosen once for every notebook: a Colab secret, read when the setup cell leaves the choice empty.
    secrets = {"CXR_KEEP_OUTPUTS_ON_DRIVE": "1"}
    colab.userdata = types.ModuleType("google.colab.userdata")
    colab.userdata.get = secrets.__getitem__
    monkeypatch.setitem(sys.modules, "google.colab.userdata", colab.userdata)
    monkeypatch.setenv("CXR_KEEP_OUTPUTS_ON_DRIVE", "")
    assert config._output_dir() == config.DRIVE_OUTPUTS and len(mounted) == 2
    secrets.clear()  # no such secret (userdata raises): not asked
    assert config._output_dir() == config.REPO_ROOT / "outputs" and len(mounted) == 2


def test_a_command_run_from_a_colab_cell_writes_where_the_notebook_looks_or_says_why_it_cannot(monkeypatch, capsys):
    """`!python -m helpers run import …` on Colab: a child of the kernel, without google.colab imported, yet on Colab
    (COLAB_RELEASE_TAG); it keeps outputs on Drive when the notebook does, even when a Colab secret chose it (which only
    the kernel can read), and refuses in one line while Drive is not mounted (only the notebook can mount it)."""
    import sys
    import types

    from helpers.cli import main

    monkeypatch.delenv("CXR_OUTPUT_DIR", raising=False)
    monkeypatch.delenv(config._KERNEL_CHOSE_DRIVE, raising=False)
    monkeypatch.setenv("CXR_KEEP_OUTPUTS_ON_DRIVE", "")
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab-20261201")
    assert config.in_colab() and not config.in_colab_kernel()
    assert config._output_dir() == config.REPO_ROOT / "outputs", "the notebook chose nothing: local, as it is"

    mounted = []  # the kernel: a secret chose Drive; it mounts Drive and tells the commands its cells run
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mounted.append)
    colab.userdata = types.SimpleNamespace(get={"CXR_KEEP_OUTPUTS_ON_DRIVE": "1"}.__getitem__)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    assert config._output_dir() == config.DRIVE_OUTPUTS and mounted == ["/content/drive"]
    monkeypatch.delitem(sys.modules, "google.colab")  # now the command, which inherits the kernel's environment
    assert config._output_dir() == config.DRIVE_OUTPUTS and len(mounted) == 1, "no mount outside the kernel"

    monkeypatch.setattr(config, "OUTPUT_DIR", config.DRIVE_OUTPUTS)
    unavailable = config.outputs_unavailable()  # /content/drive/MyDrive does not exist on this machine
    assert unavailable.startswith(f"the outputs are kept on Google Drive ({config.DRIVE_OUTPUTS}), which is not "
                                  "mounted yet") and "\n" not in unavailable
    assert main(["profile"]) == 2 and capsys.readouterr().err == f"error: {unavailable}\n"
