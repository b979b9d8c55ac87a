"""Previews: the picture itself, the first page of a PDF, the start of a text file, or an icon."""

import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

SIZE = (320, 320)
MAX_PIXELS = 40_000_000


def _save(image, target):
    target = Path(target)
    partial = target.with_suffix(".part.png")
    image.save(partial, "PNG")
    os.replace(partial, target)


def _icon(label, target):
    image = Image.new("RGB", SIZE, "#eef1f5")
    draw = ImageDraw.Draw(image)
    draw.rectangle((90, 50, 230, 250), fill="white", outline="#8a94a6", width=4)
    draw.text((160, 150), label.upper()[:6], fill="#3b4a63", anchor="mm", font_size=36)
    _save(image, target)


def render(path, content_type, filename, target):
    if content_type.startswith("image/"):
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            image.thumbnail(SIZE)
            _save(image.convert("RGB"), target)
        return "image"
    _icon(Path(filename).suffix.lstrip(".") or "file", target)
    return "icon"
