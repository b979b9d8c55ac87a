"""Sample files made at test time, so no binary (or virus-test) file lives in the repository."""

import base64
import io
import struct
import zipfile
import zlib

from PIL import Image

# The EICAR anti-virus test file, kept encoded so this source is not itself flagged.
EICAR = base64.b64decode(
    "WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJELUFOVElWSVJVUy1URVNULUZJTEUhJEgrSCo="
)
RED = (220, 30, 30)
BLUE = (30, 60, 220)
EXIF_ORIENTATION = 0x0112


def zip_of(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def nested_zip(depth, name, data):
    """`data` as `name` inside `depth` archives, each inside the next."""
    for level in range(depth):
        data = zip_of({name if level == 0 else f"level{level}.zip": data})
    return data


def zip_bomb(uncompressed_mb, tail=b""):
    """One member of zeros, then `tail`, that inflates to `uncompressed_mb` MiB from a few
    hundred KB."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("data.bin", "w", force_zip64=True) as member:
            zeros = bytes(1024 * 1024)
            for _ in range(uncompressed_mb):
                member.write(zeros)
            member.write(tail)
    return buffer.getvalue()


def _encode(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def halves(width, height, first=RED, second=BLUE):
    """Left half `first`, right half `second`."""
    image = Image.new("RGB", (width, height), second)
    image.paste(first, (0, 0, width // 2, height))
    return image


def png(width=640, height=480, color=RED):
    return _encode(Image.new("RGB", (width, height), color), "PNG")


def transparent_png(width=200, height=200):
    return _encode(Image.new("RGBA", (width, height), (0, 0, 0, 0)), "PNG")


def jpeg_with_orientation(width, height, orientation):
    """A JPEG stored `width` x `height`, red left and blue right, with an EXIF Orientation tag."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return _encode(halves(width, height), "JPEG", quality=90, exif=exif.tobytes())


def pdf(*page_colors, page_size=(300, 400)):
    """One page per colour, each `page_size` points, drawn as full-page images."""
    pages = [Image.new("RGB", page_size, color) for color in page_colors]
    return _encode(pages[0], "PDF", resolution=72.0, save_all=True, append_images=pages[1:])


def corrupt_pdf():
    return b"%PDF-1.7\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"


def _png_chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_bomb(width, height):
    """A valid black-and-white PNG of width x height pixels that compresses to a few KB."""
    row = b"\x00" + bytes((width + 7) // 8)  # filter byte, then one bit per pixel
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))
