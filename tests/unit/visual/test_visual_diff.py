"""Changed-pixel shares and diff pictures, on images drawn here (Pillow, no browser)."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

from orchestrator.backends.visual import diff


def page(size=(100, 200), boxes=(), color=(0, 0, 0)) -> Image.Image:
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for x, y, w, h in boxes:
        draw.rectangle((x, y, x + w - 1, y + h - 1), fill=color)
    return image


def test_identical_shots_differ_by_nothing():
    found = diff.compare(page(boxes=[(10, 10, 30, 30)]), page(boxes=[(10, 10, 30, 30)]))

    assert (found.percent, found.changed, found.compared) == (0.0, 0, 100 * 200)


def test_the_share_counts_the_pixels_that_changed():
    found = diff.compare(page(), page(boxes=[(0, 0, 10, 20)]))  # 200 of 20 000 pixels

    assert found.changed == 200 and found.percent == pytest.approx(1.0)


def test_a_faint_change_within_the_tolerance_does_not_count():
    found = diff.compare(page(), page(boxes=[(0, 0, 50, 50)], color=(250, 250, 250)))

    assert found.changed == 0


def test_a_shorter_page_counts_its_missing_part_as_changed():
    found = diff.compare(page(size=(100, 200)), page(size=(100, 50)))

    assert found.size == (100, 200) and found.changed == 100 * 150 and found.percent == pytest.approx(75.0)


def test_ignored_regions_count_neither_as_changed_nor_in_the_total():
    before, after = page(boxes=[(0, 0, 100, 20)]), page(boxes=[(0, 0, 100, 20)], color=(255, 0, 0))

    found = diff.compare(before, after, ignore=[[0, 0, 100, 20]])

    assert found.changed == 0 and found.compared == 100 * 180


def test_the_diff_picture_marks_changed_pixels_and_fades_the_rest():
    found = diff.compare(page(), page(boxes=[(0, 0, 10, 10)]), ignore=[[50, 50, 10, 10]])

    assert found.image.size == (100, 200)
    assert found.image.getpixel((5, 5)) == diff.HIGHLIGHT
    assert found.image.getpixel((90, 190)) == (255, 255, 255)
    assert found.image.getpixel((55, 55)) not in (diff.HIGHLIGHT, (255, 255, 255))


def test_png_and_thumbnail_round_trip():
    image = page(size=(1280, 5000), boxes=[(0, 0, 640, 400)])

    assert diff.load(diff.png(image)).size == (1280, 5000)
    small = diff.load(diff.thumbnail(image, width=320, max_height=600))
    assert small.size == (320, 600) and small.format == "JPEG"
