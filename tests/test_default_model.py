"""The default model: a shipped shape (so `--random-weights` runs it offline) of a supported family, named by
`--help`, and the presets found by the hub id of the checkpoint each is the shape of."""

from __future__ import annotations

import json

from dytok_cli.config import DEFAULT_MODEL, Settings
from dytok_cli.models import preset_for, presets, supported_model_types


def test_the_default_model_has_a_shipped_shape_of_a_supported_family():
    preset = preset_for(DEFAULT_MODEL)
    assert preset is not None and Settings().model == DEFAULT_MODEL
    assert json.loads(preset.read_text())["model_type"] in supported_model_types()


def test_a_preset_is_found_by_its_name_and_by_its_checkpoints_hub_id():
    for name, path in presets().items():
        assert preset_for(name) == path
        assert preset_for(json.loads(path.read_text())["source"]) == path
    assert preset_for("someone/not-a-preset") is None


def test_help_names_the_default_model(dytok_here):
    result = dytok_here("ask", "--help", env={"COLUMNS": "200"})
    assert result.returncode == 0 and DEFAULT_MODEL in result.stdout
