"""Previews: the picture itself, the first page of a PDF, the first lines of a text file, or an
icon for the type. A file that cannot be previewed raises NoPreview with the reason in plain
words; it is the file's nature, so trying again would not help."""

import functools
import os
from pathlib import Path

import pypdfium2 as pdfium
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

SIZE = (320, 320)
# Refused before decoding: a larger image costs hundreds of MB to draw (a decompression bomb).
MAX_PIXELS = 50_000_000
TEXT_BYTES = 8192
TEXT_LINES = 22
TEXT_COLUMNS = 48
PDF_ERRORS = {
    pdfium.raw.FPDF_ERR_FORMAT: "it is damaged or not really a PDF; check that it opens on your "
                                "computer, and submit again if it does not",
    pdfium.raw.FPDF_ERR_PASSWORD: "it is protected by a password",
    pdfium.raw.FPDF_ERR_SECURITY: "it uses an unsupported security handler",
}


class NoPreview(Exception):
    pass


def render(path, content_type, filename, target):
    """Draw the preview of `path` into the PNG `target`; returns what kind of preview it is."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"the stored file {path} is missing")
    if content_type.startswith("image/"):
        image, kind = _picture(path), "image"
    elif content_type == "application/pdf":
        image, kind = _pdf_first_page(path), "first page"
    elif content_type.startswith("text/"):
        image, kind = _text(path), "text"
    else:
        image, kind = _icon(Path(filename).suffix.lstrip(".") or "file"), "type icon"
    _save(image, target)
    return kind


def _save(image, target):
    target = Path(target)
    partial = target.with_name(f"{target.stem}.part.png")
    # The fastest zlib level: a 320 px preview gains little from more, and costs a worker more.
    image.save(partial, "PNG", compress_level=1)
    os.replace(partial, target)


def _open_header(path):
    # Pillow's own bomb check fires inside open() without the size; ours follows at once and
    # tells the student the size. open() reads only the header, so nothing is decoded yet.
    pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        return Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit


def _picture(path):
    try:
        with _open_header(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise NoPreview(
                    f"the image is {width:,} × {height:,} pixels, more than the "
                    f"{MAX_PIXELS // 1_000_000} megapixels a preview may draw"
                )
            # JPEG decodes straight at a reduced scale; other formats ignore this.
            image.draft("RGB", (SIZE[0] * 2, SIZE[1] * 2))
            image = ImageOps.exif_transpose(image)
            if image.mode not in ("RGB", "RGBA", "L", "LA"):
                image = image.convert("RGBA")
            image.thumbnail(SIZE)
            return _on_white(image)
    except (Image.DecompressionBombError, UnidentifiedImageError, OSError, SyntaxError,
            ValueError) as exc:
        raise NoPreview(f"the image could not be read ({exc})") from None


def _on_white(image):
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGB", image.size, "white")
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def _pdf_first_page(path):
    try:
        pdf = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        reason = PDF_ERRORS.get(exc.err_code, str(exc))
        raise NoPreview(f"the PDF could not be opened: {reason}") from None
    try:
        if len(pdf) == 0:
            raise NoPreview("the PDF has no pages")
        page = pdf[0]
        try:
            width, height = page.get_size()
            if width <= 0 or height <= 0:
                raise NoPreview("the PDF's first page has no size")
            bitmap = page.render(scale=min(SIZE[0] / width, SIZE[1] / height))
            try:
                return bitmap.to_pil().convert("RGB")
            finally:
                bitmap.close()
        except pdfium.PdfiumError as exc:
            raise NoPreview(f"the PDF's first page could not be drawn ({exc})") from None
        finally:
            page.close()
    finally:
        pdf.close()


@functools.cache
def _monospace(size):
    try:
        return ImageFont.truetype("DejaVuSansMono.ttf", size)
    except OSError:
        return ImageFont.load_default(size)


def _text(path):
    with open(path, "rb") as fh:
        head = fh.read(TEXT_BYTES)
    lines = head.decode("utf-8-sig", errors="replace").expandtabs(4).splitlines()
    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    font = _monospace(11)
    line_height = SIZE[1] // TEXT_LINES
    for row, line in enumerate(lines[:TEXT_LINES]):
        draw.text((6, 4 + row * line_height), line[:TEXT_COLUMNS], fill="#1f2933", font=font)
    return image


def _icon(label):
    image = Image.new("RGB", SIZE, "#eef1f5")
    draw = ImageDraw.Draw(image)
    draw.rectangle((90, 50, 230, 250), fill="white", outline="#8a94a6", width=4)
    draw.text((160, 150), label.upper()[:6], fill="#3b4a63", anchor="mm", font_size=36)
    return image
