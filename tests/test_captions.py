"""Auto Prompt: the tiny captioner, composing prompts from captions, and suggesting a prompt for a shot."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.captions import Captioner, CaptionerSpec, load_captioner_spec, make_tiny_captioner
from engine.catalog import DEFAULT_NEGATIVE_PROMPT, CatalogError
from engine.errors import WeightsMissingError
from engine.prompt_writing import clean_caption, compose_prompt, people_in_captions, suggest_prompt
from tests.conftest import CATALOG

SCENE = [
    "The image shows a man in a black suit walking down a street. The street is lined with trees.",
    "The image shows a man in a black suit walking down a street, a woman waves at him.",
]


@pytest.fixture(scope="module")
def captioner(models_dir) -> Captioner:
    """The catalog's tiny captioner, built with `make_tiny_captioner` and loaded with from_pretrained."""
    spec = load_captioner_spec([CATALOG], models_dir)
    make_tiny_captioner(spec)
    return Captioner.load(spec, "cpu")


def images(count: int) -> list[np.ndarray]:
    return [np.random.default_rng(index).integers(0, 255, (72, 128, 3), dtype=np.uint8) for index in range(count)]


def test_tiny_captioner_builds_offline_and_describes_repeatably(captioner, models_dir):
    """The tiny captioner is built into its folder (no staging left) and gives one repeatable caption per image."""
    assert (Path(captioner.spec.path) / "config.json").is_file()
    assert (Path(captioner.spec.path) / "processor_config.json").is_file()
    assert not list(models_dir.glob("*.part"))
    first = captioner.describe(images(3))
    assert len(first) == 3 and all(isinstance(caption, str) for caption in first)
    assert captioner.describe(images(3)) == first
    assert [captioner.describe([image])[0] for image in images(3)] == first
    assert captioner.describe([]) == []


def test_catalog_captioner_table_resolves_path_and_a_later_file_replaces_it(tmp_path):
    """`[captioner]` paths start in models_dir; a later catalog's table replaces the earlier one whole."""
    spec = load_captioner_spec([CATALOG], tmp_path)
    assert spec.tiny and spec.family == "florence2" and spec.path == str((tmp_path / "tiny-captioner").resolve())
    mine = tmp_path / "mine.toml"
    mine.write_text('[captioner]\nid = "florence2-base"\nhub = "florence-community/Florence-2-base"\nnum_beams = 3\n')
    spec = load_captioner_spec([CATALOG, mine], tmp_path)
    assert (spec.id, spec.weights, spec.path, spec.tiny, spec.num_beams) == (
        "florence2-base", "florence-community/Florence-2-base", None, False, 3)
    empty = tmp_path / "empty.toml"
    empty.write_text("[models]\n")
    with pytest.raises(CatalogError, match=r"no \[captioner\] table"):
        load_captioner_spec([empty], tmp_path)
    with pytest.raises(CatalogError, match="only captioners whose id starts with 'tiny-'"):
        mine.write_text('[captioner]\nid = "mine"\npath = "x"\ntiny = true\n')
        load_captioner_spec([mine], tmp_path)


def test_compose_puts_user_prompt_first_then_scene_then_style():
    """The user's prompt comes first, verbatim, then `scene:` with the captions, then `style:` with the style."""
    composed = compose_prompt("Oil painting, thick brush strokes.", ["A red house by a river."],
                              "A watercolour painting of a garden.", people=True)
    assert composed.prompt == ("Oil painting, thick brush strokes. scene: a red house by a river. "
                               "style: a watercolour painting of a garden")
    assert compose_prompt("", ["A red house by a river."], None, people=True).prompt == "scene: a red house by a river"
    assert compose_prompt("oil painting", [], None, people=True).prompt == "oil painting"


def test_no_people_drops_human_terms_from_prompt_and_negative_prompt():
    """Without people, person phrases leave the generated text and human terms the negative prompt; the rest stays."""
    composed = compose_prompt("a man in the style of Van Gogh", ["A forest with a river, a man fishing."], None,
                              people=False)
    assert composed.prompt == "a man in the style of Van Gogh. scene: a forest with a river"
    for term in ("extra faces", "extra fingers", "extra limbs", "disfigured"):
        assert term not in composed.negative_prompt and term in composed.dropped_terms
    for term in ("blurry", "low quality", "watermark", "deformed"):
        assert term in composed.negative_prompt.split(", ")
    assert "a man fishing" in composed.dropped_terms


def test_people_keep_the_negative_prompt_unchanged():
    """With people in the shot nothing is dropped, from the prompt or from the negative prompt."""
    composed = compose_prompt("", SCENE, None, people=True)
    assert composed.negative_prompt == DEFAULT_NEGATIVE_PROMPT and composed.dropped_terms == []
    assert "a woman waves at him" in composed.prompt


def test_captions_of_several_frames_are_merged_without_repeats_or_artefacts():
    """A sentence said by several frames appears once; special tokens, task tags and repeated words are gone."""
    noisy = "</s><s><MORE_DETAILED_CAPTION>The image shows a man man man in a black suit walking down a street.</s>"
    composed = compose_prompt("", [*SCENE, noisy], None, people=True)
    assert composed.prompt == ("scene: a man in a black suit walking down a street; a woman waves at him; "
                               "the street is lined with trees")
    assert clean_caption(noisy) == "The image shows a man in a black suit walking down a street."


def test_generated_text_stays_within_max_words():
    """Whole sentences are kept while they fit in max_words; an overlong first sentence is cut at max_words."""
    captions = [f"a {colour} house stands by the river" for colour in ("red", "green", "blue", "yellow")]
    composed = compose_prompt("keep every word of mine " * 5, captions, " ".join(f"word{index}" for index in range(30)),
                              people=True, max_words=16, max_style_words=10)
    scene = composed.prompt.split("scene: ")[1].split(". style: ")[0]
    style = composed.prompt.split("style: ")[1]
    assert composed.prompt.startswith(("keep every word of mine " * 5).strip())
    assert scene == "a red house stands by the river; a green house stands by the river"
    assert len(style.split()) == 10


def test_suggest_prompt_negative_prompt_follows_the_person_count(captioner, media):
    """The same shot gets the full negative prompt with people counted and a nature one without."""
    seen: list[list[np.ndarray]] = []

    def counter(count: int):
        def count_people(frames: list[np.ndarray]) -> list[int]:
            seen.append(frames)
            return [count] * len(frames)
        return count_people

    nobody = suggest_prompt(media / "chaplin.mp4", 10, 130, captioner, people_counter=counter(0),
                            user_prompt="oil painting")
    two = suggest_prompt(media / "chaplin.mp4", 10, 130, captioner, people_counter=counter(2),
                         user_prompt="oil painting")
    assert two.negative_prompt == DEFAULT_NEGATIVE_PROMPT and "extra faces" not in nobody.negative_prompt
    assert (nobody.people, two.people, two.people_from, two.person_counts) == (False, True, "detector", [2] * 4)
    assert nobody.frames == two.frames == [10, 50, 90, 130]
    assert [frame.shape for frame in seen[0]] == [(360, 640, 3)] * 4
    assert two.prompt.startswith("oil painting") and two.model == "tiny-captioner" and len(two.captions) == 4
    assert two.to_manifest()["frames"] == [10, 50, 90, 130]


def test_suggest_prompt_includes_the_reference_caption(captioner, media, tmp_path):
    """A reference image is captioned too and its caption ends the prompt after `style:`."""
    reference = tmp_path / "style.png"
    cv2.imwrite(str(reference), np.full((90, 160, 3), (40, 120, 200), np.uint8))
    result = suggest_prompt(media / "chaplin.mp4", 0, 240, captioner, reference=reference, samples=3,
                            people_counter=lambda frames: [1] * len(frames), max_style_words=100)
    assert result.frames == [0, 120, 240] and len(result.captions) == 3
    assert result.style_caption and result.prompt.endswith(f"style: {result.style_caption}")


def test_people_fallback_reads_the_captions(captioner, media):
    """Without a detector, a caption naming a person means people; body parts alone do not."""
    assert people_in_captions(["A forest.", "The man walks his dog."])
    assert not people_in_captions(["A river in a forest.", "The face of a clock with its hands at noon."])
    result = suggest_prompt(media / "chaplin.mp4", 0, 40, captioner, samples=2)
    assert result.people_from == "captions" and result.person_counts is None
    assert result.people == people_in_captions(result.captions)


def test_captioner_spec_needs_one_weights_location():
    """A captioner names a folder or a hub id, not both and not neither."""
    with pytest.raises(ValueError, match="exactly one of"):
        CaptionerSpec(id="x", path="a", hub="b")
    with pytest.raises(ValueError, match="exactly one of"):
        CaptionerSpec(id="x")


def test_missing_captioner_weights_are_refused_with_the_folder_named(tmp_path):
    """A captioner that is not tiny and has no weights in its folder is refused, naming the folder."""
    spec = CaptionerSpec(id="florence2-local", path=str(tmp_path / "florence2"))
    with pytest.raises(WeightsMissingError, match="florence2-local.*florence2"):
        Captioner.load(spec, "cpu")
