#!/usr/bin/env python3
"""Draws the app's icons (public/icons/*.png): a white "A" with a wing-like crossbar on the theme colour, as the
PWA manifest and index.html name them. Pure Python (zlib), so it needs nothing installed; the PNGs are committed and
the build only copies them. Run it again after changing the mark: `python3 scripts/make-icons.py`.

The maskable icon fills the whole square with the theme colour and keeps the mark inside the central circle of
radius 40% (the safe zone a platform's mask may not cut); the others have rounded corners of their own."""

import math
import struct
import zlib
from pathlib import Path

THEME = (0x2F, 0x6F, 0xD6)
MARK = (0xFF, 0xFF, 0xFF)
OUT = Path(__file__).resolve().parent.parent / "public" / "icons"

# The mark in unit coordinates (0..1, y down), as thick strokes: the A's two legs and a crossbar that rises to the
# right like a wing.
STROKES = [((0.50, 0.18), (0.24, 0.80)), ((0.50, 0.18), (0.76, 0.80)), ((0.33, 0.60), (0.74, 0.48))]
STROKE_WIDTH = 0.11


def seg_dist(px, py, a, b):
    (ax, ay), (bx, by) = a, b
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return math.hypot(px - ax - t * dx, py - ay - t * dy)


def rounded_rect_coverage(px, py, size, radius):
    """How much of the pixel centred at (px, py) lies inside a square of `size` with corners of `radius` (pixels)."""
    cx = min(max(px, radius), size - radius)
    cy = min(max(py, radius), size - radius)
    d = math.hypot(px - cx, py - cy) - radius
    return max(0.0, min(1.0, 0.5 - d))


def draw(size, *, mark_scale, corner):
    """RGBA rows. `mark_scale` shrinks the mark about the centre; `corner` is the corner radius as a fraction."""
    rows = []
    width_px = STROKE_WIDTH * mark_scale * size
    strokes = [tuple(((x - 0.5) * mark_scale + 0.5) * size for x in p) for s in STROKES for p in s]
    segs = [(strokes[i], strokes[i + 1]) for i in range(0, len(strokes), 2)]
    for y in range(size):
        row = bytearray()
        for x in range(size):
            px, py = x + 0.5, y + 0.5
            bg = rounded_rect_coverage(px, py, size, corner * size) if corner else 1.0
            d = min(seg_dist(px, py, a, b) for a, b in segs)
            ink = max(0.0, min(1.0, width_px / 2 - d + 0.5))
            rgb = [round(t + (m - t) * ink) for t, m in zip(THEME, MARK)]
            row += bytes(rgb + [round(255 * bg)])
        rows.append(bytes(row))
    return rows


def png(rows, size):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\0" + r for r in rows)
    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    icons = {
        "icon-192.png": (192, 1.0, 0.18),
        "icon-512.png": (512, 1.0, 0.18),
        # The legs' feet reach 0.39 from the centre at scale 1: at 0.7 the mark and its stroke stay inside 0.4.
        "icon-maskable-512.png": (512, 0.7, 0.0),
        # iOS draws its own rounded corners and shows transparency as black: a full square.
        "apple-touch-icon.png": (180, 0.85, 0.0),
        "favicon-32.png": (32, 1.0, 0.18),
    }
    for name, (size, scale, corner) in icons.items():
        data = png(draw(size, mark_scale=scale, corner=corner), size)
        (OUT / name).write_bytes(data)
        print(f"{name}: {size}x{size}, {len(data)} bytes")


if __name__ == "__main__":
    main()
