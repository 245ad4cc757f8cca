"""The output size rule: longest side = output_size, aspect kept, multiples of 16."""

from engine.geometry import output_dims


def test_landscape_and_portrait():
    assert output_dims(1920, 1080, 1280) == (1280, 720)
    assert output_dims(640, 360, 128) == (128, 64)
    assert output_dims(1080, 1920, 1280) == (720, 1280)
    assert output_dims(640, 480, 256) == (256, 192)


def test_sides_are_multiples_and_never_zero():
    for width, height in [(640, 360), (200, 200), (1280, 720), (4000, 100), (37, 1001)]:
        for size in (64, 100, 256, 1280):
            out_w, out_h = output_dims(width, height, size)
            assert out_w % 16 == 0 and out_h % 16 == 0 and min(out_w, out_h) >= 16
            assert max(out_w, out_h) == size // 16 * 16
