"""Compare two screenshots: the share of changed pixels, and a picture that shows where.

Two shots of different heights are compared on the larger canvas: what only one of them covers counts as
changed (a page that lost half its height changed by half). Regions to ignore (boxes from CSS selectors, in
page pixels, from either shot) count neither as changed nor in the total. A pixel is changed when one of its
channels differs by more than TOLERANCE, so the last bit of anti-aliasing does not count.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageDraw

TOLERANCE = 16  # of 255, per channel
HIGHLIGHT = (230, 0, 60)
IGNORED = (140, 140, 140)


@dataclass(frozen=True)
class Difference:
    """The outcome of one comparison. `percent` is changed / compared pixels * 100 (compared excludes ignored)."""

    percent: float
    changed: int
    compared: int
    size: tuple[int, int]
    image: Image.Image  # the after shot faded, changed pixels in HIGHLIGHT, ignored regions grey


def _canvas(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    canvas = Image.new("RGB", size, (255, 255, 255))
    canvas.paste(image.convert("RGB"), (0, 0))
    return canvas


def _coverage(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """A mask of the canvas area the image covers (255) and does not (0)."""
    mask = Image.new("L", size, 0)
    mask.paste(255, (0, 0, *image.size))
    return mask


def changed_mask(before: Image.Image, after: Image.Image, tolerance: int = TOLERANCE) -> Image.Image:
    """Given two images, return an L mask on the larger canvas: 255 where they differ, 0 where they agree."""
    size = (max(before.width, after.width), max(before.height, after.height))
    red, green, blue = ImageChops.difference(_canvas(before, size), _canvas(after, size)).split()
    strongest = ImageChops.lighter(ImageChops.lighter(red, green), blue)
    mask = strongest.point(lambda value: 255 if value > tolerance else 0)
    only_one = ImageChops.difference(_coverage(before, size), _coverage(after, size))
    return ImageChops.lighter(mask, only_one)


def ignore_mask(size: tuple[int, int], boxes) -> Image.Image:
    """Given a canvas size and [x, y, width, height] boxes, return an L mask: 255 inside any box."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for x, y, width, height in boxes:
        if width > 0 and height > 0:
            draw.rectangle((x, y, x + width - 1, y + height - 1), fill=255)
    return mask


def compare(before: Image.Image, after: Image.Image, ignore=(), tolerance: int = TOLERANCE) -> Difference:
    """Given two shots and the boxes to ignore, return their Difference."""
    changed = changed_mask(before, after, tolerance)
    ignored = ignore_mask(changed.size, ignore)
    changed = ImageChops.subtract(changed, ignored)
    total = changed.width * changed.height - ignored.histogram()[255]
    count = changed.histogram()[255]
    percent = round(100.0 * count / total, 4) if total else 0.0
    return Difference(percent, count, total, changed.size, _picture(after, changed, ignored))


def _picture(after: Image.Image, changed: Image.Image, ignored: Image.Image) -> Image.Image:
    faded = Image.blend(
        _canvas(after, changed.size).convert("L").convert("RGB"), Image.new("RGB", changed.size, (255, 255, 255)), 0.6
    )
    grey = Image.composite(Image.new("RGB", changed.size, IGNORED), faded, ignored.point(lambda v: v // 2))
    return Image.composite(Image.new("RGB", changed.size, HIGHLIGHT), grey, changed)


def load(data: bytes | str) -> Image.Image:
    """Given PNG bytes or a file path, return the image, loaded."""
    image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    image.load()
    return image


def png(image: Image.Image) -> bytes:
    """Return the image as PNG bytes."""
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=6)
    return out.getvalue()


def thumbnail(image: Image.Image, width: int = 320, max_height: int = 1200) -> bytes:
    """Return a small JPEG of the image's top part (for reports): `width` wide, at most `max_height` tall."""
    scale = width / image.width
    small = image.convert("RGB").resize((width, max(1, round(image.height * scale))), Image.Resampling.LANCZOS)
    small = small.crop((0, 0, width, min(small.height, max_height)))
    out = io.BytesIO()
    small.save(out, "JPEG", quality=70, optimize=True)
    return out.getvalue()
