"""Hostile uploads made at test time: archive and image bombs, polyglots, broken and enormous
PDFs, and multipart bodies written byte by byte so every header is exactly what an attacker
would send."""

import functools
import io
import struct
import zipfile
import zlib

from tests import samples

MiB = 1024 * 1024
BOUNDARY = "hostile-boundary-7d1f"


def multipart(fields=None, file_field="file", filename=b"essay.txt", content=b"hello\n",
              boundary=BOUNDARY):
    """A multipart/form-data body with the file part's filename given as raw bytes."""
    out = bytearray()
    for name, value in (fields or {}).items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                f"{value}\r\n").encode()
    out += f"--{boundary}\r\n".encode()
    out += f'Content-Disposition: form-data; name="{file_field}"; filename="'.encode()
    out += filename + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
    out += content + f"\r\n--{boundary}--\r\n".encode()
    return bytes(out)


def multipart_type(boundary=BOUNDARY):
    return f"multipart/form-data; boundary={boundary}"


@functools.cache
def _zeros_crc32(size):
    crc, chunk = 0, bytes(MiB)
    for _ in range(size // MiB):
        crc = zlib.crc32(chunk, crc)
    return crc


@functools.cache
def _deflated_zeros(mib):
    # Deflate cannot beat about 1000:1, but it needs no effort: after a full flush one block of
    # compressed zeros stands alone, so repeating it makes a long stream in no time.
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = packer.compress(bytes(MiB)) + packer.flush(zlib.Z_FULL_FLUSH)
    return block * mib + b"\x03\x00"  # an empty final block ends the stream


def zip_of_zeros(mib, name="data.bin"):
    """A zip written by hand whose one member inflates to `mib` MiB of zeros (under 4 GiB)."""
    data, size = _deflated_zeros(mib), mib * MiB
    crc, encoded = _zeros_crc32(size), name.encode()
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(data), size,
                        len(encoded), 0) + encoded
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(data),
                          size, len(encoded), 0, 0, 0, 0, 0, 0) + encoded
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central),
                      len(local) + len(data), 0)
    return local + data + central + end


def zip_bomb(copies=8, inner_mib=1024):
    """A zip of `copies` zips, each holding `inner_mib` MiB of zeros: gigabytes from a few KB."""
    inner = zip_of_zeros(inner_mib)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for number in range(copies):
            archive.writestr(f"part{number}.zip", inner)
    return buffer.getvalue()


def png_declaring(width, height):
    """A PNG whose header claims width x height pixels, with almost no pixel data behind it."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(bytes(64))) + _png_chunk(b"IEND", b""))


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def pdf_document(objects):
    """A PDF from its object bodies (object 1 is the catalog), with a correct xref table."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += (f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\n"
            f"startxref\n{xref}\n%%EOF\n").encode()
    return bytes(out)


def pdf_with_pages(levels=6, fan_out=10):
    """About a kilobyte of PDF with fan_out ** levels pages: each page-tree node lists the next
    node fan_out times, down to one shared blank page."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    for level in range(levels):
        number = 2 + level
        parent = f"/Parent {number - 1} 0 R " if level else ""
        kids = " ".join([f"{number + 1} 0 R"] * fan_out)
        objects.append(f"<< /Type /Pages {parent}/Kids [{kids}] "
                       f"/Count {fan_out ** (levels - level)} >>".encode())
    objects.append(f"<< /Type /Page /Parent {1 + levels} 0 R /MediaBox [0 0 300 400] >>".encode())
    return pdf_document(objects)


def pdf_image_bomb(mib=384):
    """One page drawing a grey image of `mib` MiB of pixels from under a KB per MiB."""
    width = 16384
    height = mib * MiB // width
    size = width * height
    # FlateDecode wants zlib framing around the raw deflate stream: a header and an Adler-32.
    stream = b"\x78\xda" + _deflated_zeros(mib) + struct.pack(">I", ((size % 65521) << 16) | 1)
    draw = b"q 300 0 0 400 0 0 cm /Im0 Do Q"
    return pdf_document([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 400] "
        b"/Resources << /XObject << /Im0 4 0 R >> >> /Contents 5 0 R >>",
        (f"<< /Type /XObject /Subtype /Image /Width {width} /Height {height} "
         f"/ColorSpace /DeviceGray /BitsPerComponent 8 /Filter /FlateDecode "
         f"/Length {len(stream)} >>\nstream\n").encode() + stream + b"\nendstream",
        f"<< /Length {len(draw)} >>\nstream\n".encode() + draw + b"\nendstream",
    ])


def truncated_pdf():
    """A real one-page PDF cut off halfway, as an interrupted download leaves it."""
    whole = samples.pdf((40, 160, 90))
    return whole[: len(whole) // 2]


def pdf_zip_polyglot(members):
    """A file that is a PDF from its first byte and a zip from its last: a PDF with a zip
    appended, which zip readers find by the directory at the end."""
    return samples.pdf((240, 240, 240)) + samples.zip_of(members)
