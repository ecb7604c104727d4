#!/usr/bin/env python3
"""Draws the phone app's icons, icon-192.png and icon-512.png: a white check
mark on otpd's blue (#0b5cad, the buttons' colour in otpd.css), full bleed so
that Android may mask it to any shape (the mark stays inside the central 80 %
circle, the manifest's "maskable" safe zone).

Standard library only (zlib + struct write the PNG), so anyone can run it
again without installing an image library:

    python3 otpd/src/web/approve/make-icons.py

The output is deterministic: running it again gives byte-identical files.
"""

import math
import os
import struct
import zlib

BLUE = (0x0B, 0x5C, 0xAD)
WHITE = (0xFF, 0xFF, 0xFF)
# The check mark as a polyline in units of the icon's size, and its stroke
# width; both well inside the safe zone (a circle of radius 0.4 around the
# centre).
CHECK = [(0.30, 0.52), (0.44, 0.66), (0.71, 0.36)]
STROKE = 0.085
# Samples per pixel along each axis, for smooth edges.
SUPERSAMPLE = 4


def distance_to_segment(px, py, ax, ay, bx, by):
    """The distance from point p to the segment a-b."""
    dx, dy = bx - ax, by - ay
    t = ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)
    t = max(0.0, min(1.0, t))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


def coverage(x, y, size):
    """How much of pixel (x, y) the check mark covers, 0.0 to 1.0."""
    inside = 0
    for sy in range(SUPERSAMPLE):
        for sx in range(SUPERSAMPLE):
            px = (x + (sx + 0.5) / SUPERSAMPLE) / size
            py = (y + (sy + 0.5) / SUPERSAMPLE) / size
            nearest = min(
                distance_to_segment(px, py, *a, *b) for a, b in zip(CHECK, CHECK[1:])
            )
            if nearest <= STROKE / 2:  # round caps and joins come for free
                inside += 1
    return inside / SUPERSAMPLE**2


def pixel_rows(size):
    """The image as PNG scanlines (filter byte 0, then RGB)."""
    for y in range(size):
        row = bytearray([0])
        for x in range(size):
            a = coverage(x, y, size)
            row += bytes(round(b + (w - b) * a) for b, w in zip(BLUE, WHITE))
        yield bytes(row)


def chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png(size):
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB
    pixels = zlib.compress(b"".join(pixel_rows(size)), 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", pixels)
        + chunk(b"IEND", b"")
    )


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    for size in (192, 512):
        path = os.path.join(here, f"icon-{size}.png")
        with open(path, "wb") as out:
            out.write(png(size))
        print(f"{path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
