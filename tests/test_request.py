"""The request model: every workspace field exists; errors name the field and the value."""

from __future__ import annotations

import json

import pytest

from daemon.errors import RequestError
from daemon.request import RenderRequest, parse_request

LIMIT = 1024 * 1024


def parse(text: str | bytes):
    return parse_request(text.encode() if isinstance(text, str) else text, LIMIT)


def test_every_render_video_setting_is_a_field():
    expected = {"preset", "model", "source", "style_frame", "reference_frame", "prompt", "auto_prompt",
                "negative_prompt", "controlnets", "mask", "output_size", "steps", "interpolation",
                "image_sequence", "cfg", "color_consistency", "seed", "shift", "low_step", "context",
                "frame_range", "priority", "when", "cancel"}
    assert expected <= set(RenderRequest.model_fields)


def test_supported_fields_parse():
    request = parse(json.dumps({"model": "tiny-wan-vace", "source": "plate.mov", "prompt": "oil painting",
                                "negative_prompt": "blurry", "output_size": 512, "steps": 20, "cfg": 5,
                                "seed": 7, "shift": 3.0, "context": {"size": 81, "overlap": 9},
                                "frame_range": [0, 47]}))
    assert request.frame_range == (0, 47) and request.cfg == 5.0 and request.context.size == 81


@pytest.mark.parametrize("text,message", [
    ('{"steps": "20"}', 'steps: Input should be a valid integer (got "20")'),
    ('{"cfg": "high"}', 'cfg: Input should be a valid number'),
    ('{"colour": "red"}', "unknown field 'colour'"),
    ('{"context": {"sizes": 3}}', "unknown field 'context.sizes'"),
    ('{"frame_range": [9, 2]}', "must be [first, last] with 0 <= first <= last, got [9, 2]"),
    ('{"frame_range": [1, 2, 3]}', "frame_range"),
    ('{"output_size": 32}', "output_size: Input should be greater than or equal to 64 (got 32)"),
    ('{"seed": -1}', "seed: Input should be greater than or equal to 0"),
    ("[1, 2]", "the request must be a JSON object"),
    ("{oops", "the request is not valid JSON"),
    ("", "the request file is empty"),
    ('{"seed": 1' + "0" * 10000 + "}", "the request is not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "the request is not valid JSON"),
])
def test_errors_name_the_field_and_value(text, message):
    with pytest.raises(RequestError) as caught:
        parse(text)
    assert message in str(caught.value)


def test_controls_and_auto_prompt_parse():
    request = parse(json.dumps({"auto_prompt": True, "controlnets": [{"type": "depth+pose", "strength": 0.8}]}))
    assert request.auto_prompt and request.controlnets[0].type == "depth+pose"
    with pytest.raises(RequestError, match="controlnets.0.type"):
        parse(json.dumps({"controlnets": [{"type": "canny"}]}))


def test_workspace_settings_parse():
    request = parse(json.dumps({
        "preset": "style-transfer", "style_frame": {"keyframe": 12}, "reference_frame": "ref.png",
        "interpolation": True, "image_sequence": "exr", "color_consistency": 0.5, "low_step": True,
        "context": {"start_frame_buffer": 4, "dynamic_reference": False},
    }))
    assert request.style_frame.keyframe == 12 and request.context.start_frame_buffer == 4


@pytest.mark.parametrize("text,message", [
    ('{"image_sequence": "tiff"}', "image_sequence: Input should be 'png' or 'exr'"),
    ('{"color_consistency": 1.5}', "color_consistency: Input should be less than or equal to 1"),
    ('{"style_frame": {"keyframe": -1}}', "style_frame.Keyframe.keyframe"),
    ('{"context": {"start_frame_buffer": 100}}', "context.start_frame_buffer: Input should be less than or equal"),
])
def test_workspace_settings_are_validated(text, message):
    with pytest.raises(RequestError) as caught:
        parse(text)
    assert message in str(caught.value)


def test_oversized_request_is_refused_before_parsing():
    with pytest.raises(RequestError, match="over the limit of 100 bytes"):
        parse_request(b'{"prompt": "' + b"x" * 200 + b'"}', 100)


def test_queue_fields_parse():
    """priority, when and cancel are accepted: the queue order, the start time and a cancel."""
    request = parse(json.dumps({"priority": 5, "when": "overnight", "cancel": True}))
    assert (request.priority, request.when, request.cancel) == (5, "overnight", True)
    with pytest.raises(RequestError, match="priority: Input should be less than or equal to 1000"):
        parse(json.dumps({"priority": 5000}))
    with pytest.raises(RequestError, match="cancel: Input should be a valid boolean"):
        parse(json.dumps({"cancel": "yes"}))
