"""The catalog and weights: user entries, missing weights, tiny models built offline."""

from __future__ import annotations

import pytest

from engine.catalog import CatalogError, load_catalog
from engine.errors import WeightsMissingError
from engine.models import ModelCache, ensure_weights, make_tiny
from tests.conftest import CATALOG


def test_user_catalog_adds_and_replaces_entries(tmp_path):
    mine = tmp_path / "mine.toml"
    mine.write_text('[models.tiny-wan-vace]\nname = "renamed"\nbackend = "wan-vace"\npath = "elsewhere"\ntiny = true\n'
                    '[models.studio-vace]\nbackend = "wan-vace"\npath = "/mnt/weights/vace"\n')
    catalog = load_catalog([CATALOG, mine], tmp_path / "models")
    assert catalog["tiny-wan-vace"].name == "renamed"
    assert catalog["tiny-wan-vace"].path == str((tmp_path / "models" / "elsewhere").resolve())
    assert catalog["studio-vace"].path == "/mnt/weights/vace"
    assert "wan-vace-1_3b" in catalog


@pytest.mark.parametrize("entry,message", [
    ('backend = "wan-vace"', "give exactly one of `path`"),
    ('backend = "wan-vace"\npath = "a"\nhub = "b/c"', "give exactly one of `path`"),
    ('backend = "wan-vace"\npath = "a"\ntiny = true', "only models whose id starts with 'tiny-'"),
    ('backend = "wan-vace"\npath = "a"\nframe_constraint = "odd"', "frame constraint 'odd'"),
    ('backend = "wan-vace"\npath = "a"\nsteps = 0', "steps"),
])
def test_invalid_entries_are_explained(tmp_path, entry, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(f"[models.studio]\n{entry}\n")
    with pytest.raises(CatalogError, match="model 'studio' is invalid") as caught:
        load_catalog([bad], tmp_path)
    assert message in str(caught.value)


def test_missing_real_weights_are_a_clear_error_and_never_built(tmp_path):
    catalog = tmp_path / "c.toml"
    catalog.write_text('[models.studio-vace]\nbackend = "wan-vace"\npath = "vace-1.3b"\n')
    spec = load_catalog([catalog], tmp_path)["studio-vace"]
    with pytest.raises(WeightsMissingError, match="weights for model 'studio-vace' are not at"):
        ensure_weights(spec)
    with pytest.raises(ValueError, match="only tiny-\\* models can be built"):
        make_tiny(spec)
    assert not (tmp_path / "vace-1.3b").exists()


def test_tiny_model_is_built_on_first_use_and_loaded_from_disk(tmp_path):
    spec = load_catalog([CATALOG], tmp_path)["tiny-wan-vace"]
    assert not spec.weights_present()
    backend = ModelCache().get(spec, "cpu")
    assert spec.weights_present()
    assert (tmp_path / "tiny-wan-vace" / "transformer" / "config.json").is_file()
    assert type(backend.pipeline).__name__ == "WanVACEPipeline"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_models_are_loaded_once_per_worker(tiny_spec):
    cache = ModelCache()
    assert cache.get(tiny_spec, "cpu") is cache.get(tiny_spec, "cpu")
    assert "tiny-wan-vace" in cache
