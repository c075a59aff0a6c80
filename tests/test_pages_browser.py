"""The incident pages' charts in a real browser: the app serves over loopback, Debian's headless
chromium opens the signed pages, takes a screenshot (decoded here: the charts' own colours must be
on it) and dumps the DOM (the SVG elements must be in it). Skipped only where chromium is absent."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import time
import zlib
from collections import Counter
from datetime import timedelta
from itertools import accumulate
from pathlib import Path

import pytest

from bot.clock import FakeClock
from bot.incidents import links
from tests.support.harness import RESPONDER, Bot, make_settings

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                                         "(apt-get install -y chromium); scripts/test installs it in CI")
HOSTILE = "<script>alert(1)</script> & co"
WINDOW = (1200, 1400)
# Colours only the charts paint (bot's templates _timeline_chart.html / _response_chart.html).
TRACK = (0xF2, 0xF2, 0xF2)
DECLARED, ACKNOWLEDGED, MITIGATED = (0xE7, 0x4C, 0x3C), (0xF3, 0x9C, 0x12), (0xF1, 0xC4, 0x0F)


def chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
         "--disable-background-networking", "--disable-component-update", "--force-device-scale-factor=1",
         f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", *args, url],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def open_page(tmp_path: Path, url: str, name: str) -> tuple[str, Path]:
    """The page's DOM after loading, and a screenshot of it (one browser run does both)."""
    path = tmp_path / f"{name}.png"
    done = chromium(tmp_path, url, "--dump-dom", f"--screenshot={path}")
    assert done.returncode == 0 and "<svg" in done.stdout and path.exists(), (done.returncode, done.stderr[-2000:])
    return done.stdout, path


def _unfilter(kind: int, line: bytes, prev: bytes, bpp: int) -> bytes:
    """One PNG scanline without its filter (RFC 2083 §6); the common filters at C speed."""
    if kind == 0:
        return line
    if kind == 2:  # up: bytewise (line + prev) mod 256, all bytes at once on big integers
        n = len(line)
        low, high = int.from_bytes(b"\x7f" * n, "big"), int.from_bytes(b"\x80" * n, "big")
        a, b = int.from_bytes(line, "big"), int.from_bytes(prev, "big")
        return (((a & low) + (b & low)) ^ ((a ^ b) & high)).to_bytes(n, "big")
    out = bytearray(line)
    if kind == 1:  # sub: a running sum per channel, mod 256
        for c in range(bpp):
            out[c::bpp] = bytes(map((255).__and__, accumulate(line[c::bpp])))
        return bytes(out)
    if kind == 3:  # average
        for i in range(len(out)):
            out[i] = (out[i] + ((out[i - bpp] if i >= bpp else 0) + prev[i]) // 2) & 0xFF
        return bytes(out)
    for i in range(bpp):  # Paeth: left and corner are 0 on the first pixel, so the predictor is up
        out[i] = (out[i] + prev[i]) & 0xFF
    for i in range(bpp, len(out)):
        left, up, corner = out[i - bpp], prev[i], prev[i - bpp]
        pa, pb, pc = abs(up - corner), abs(left - corner), abs(left + up - 2 * corner)
        out[i] = (out[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
    return bytes(out)


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB bytes) of an 8-bit RGB or RGBA PNG, decoded with zlib alone."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(b"".join(idat)), width * bpp
    rows, prev = [], bytes(stride)
    for y in range(height):
        at = y * (stride + 1)
        prev = _unfilter(raw[at], raw[at + 1:at + 1 + stride], prev, bpp)
        rows.append(prev if bpp == 3 else bytes(b for i, b in enumerate(prev) if i % 4 < 3))
    return width, height, rows


def colour_counts(path: Path) -> Counter:
    width, height, rows = png_pixels(path)
    assert (width, height) == WINDOW
    counts: Counter = Counter()
    for row in rows:
        counts.update(zip(row[0::3], row[1::3], row[2::3]))
    return counts


def test_png_decoder_reads_what_it_is_given(tmp_path):
    """The decoder the browser test relies on: a 3×2 RGB PNG with each filter type round-trips."""
    pixels = [bytes([255, 0, 0, 0, 255, 0, 200, 201, 202]), bytes([0, 0, 255, 250, 250, 250, 9, 130, 255])]
    for kind in range(5):
        def filtered(row, prev):
            out = bytearray()
            for i, b in enumerate(row):
                left = row[i - 3] if i >= 3 else 0
                up, corner = prev[i], prev[i - 3] if i >= 3 else 0
                pred = [0, left, up, (left + up) // 2, None][kind]
                if pred is None:
                    p = left + up - corner
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                    pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                out.append((b - pred) & 0xFF)
            return bytes([kind]) + bytes(out)
        body = filtered(pixels[0], bytes(9)) + filtered(pixels[1], pixels[0])

        def chunk(name, payload):
            return struct.pack(">I", len(payload)) + name + payload + struct.pack(">I", zlib.crc32(name + payload))
        png = tmp_path / f"f{kind}.png"
        png.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 3, 2, 8, 2, 0, 0, 0))
                        + chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b""))
        assert png_pixels(png) == (3, 2, pixels), kind


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def page_bot(tmp_path, db_url, fake_slack, clock):
    settings = make_settings(tmp_path, db_url, fake_slack.api_url)
    running = Bot(settings, fake_slack, clock=clock).start()
    yield running
    running.stop()


def signed(bot: Bot, path: str, clock: FakeClock) -> str:
    return f"{bot.url}{path}?{links.signed_query(bot.settings, path, clock.now())}"


def test_the_pages_draw_their_charts_in_a_headless_browser(page_bot, clock, tmp_path):
    bot = page_bot
    bot.slash_text(f"incident declare P1 checkout {HOSTILE}", user=RESPONDER)
    clock.advance(timedelta(minutes=4))
    bot.slash_text("incident ack", user=RESPONDER)
    clock.advance(timedelta(minutes=8))
    bot.slash_text("incident update rolled back the <b>cart</b> deploy", user=RESPONDER)
    clock.advance(timedelta(minutes=10))
    bot.slash_text("incident update error rate falling", user=RESPONDER)
    clock.advance(timedelta(minutes=5))
    bot.slash_text("incident mitigated", user=RESPONDER)
    clock.advance(timedelta(minutes=20))
    bot.slash_text("incident resolve a bad deploy", user=RESPONDER)
    bot.slash_text("incident declare P2 search results slow", user=RESPONDER, channel="C0OTHER")
    clock.advance(timedelta(minutes=70))
    bot.slash_text("incident ack", user=RESPONDER, channel="C0OTHER")  # late: the P2 target is 1h
    clock.advance(timedelta(minutes=10))
    bot.drain_sync()

    started = time.monotonic()
    pages = {name: open_page(tmp_path, signed(bot, path, clock), name)
             for name, path in (("incident", "/incidents/1"), ("open", "/incidents/2"), ("incidents", "/incidents"))}
    elapsed = time.monotonic() - started
    resolved = pages["incident"][0]
    svg = re.search(r'<svg id="incident-timeline".*?</svg>', resolved, re.S)
    assert svg, resolved[:2000]
    svg = svg.group(0)
    for element in ('id="phase-declared"', 'id="phase-acknowledged"', 'id="phase-mitigated"',
                    'id="mark-declare"', 'id="mark-ack"', 'id="mark-mitigate"', 'id="mark-resolve"',
                    'id="target-ack"', 'id="target-resolve"'):
        assert element in svg, element
    assert len(re.findall(r'class="tick update"', svg)) == 2
    assert 'id="mark-now"' not in svg  # resolved: drawn up to its resolution
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in svg and "<script" not in resolved
    assert "rolled back the &lt;b&gt;cart&lt;/b&gt; deploy" in svg and "<b>" not in svg
    assert "acknowledged 12:04" in svg and "resolved 12:47" in svg

    still_open = pages["open"][0]
    svg2 = re.search(r'<svg id="incident-timeline".*?</svg>', still_open, re.S).group(0)
    assert 'id="mark-now"' in svg2 and 'id="mark-resolve"' not in svg2
    assert re.search(r'<g id="mark-ack" class="mark ack late">', svg2)  # 1h 10m against a 1h target
    assert 'class="target missed"' in svg2  # the ack target, missed

    listing = pages["incidents"][0]
    chart = re.search(r'<svg id="response-times".*?</svg>', listing, re.S)
    assert chart, listing[:2000]
    chart = chart.group(0)
    for element in ('id="bar-mtta-P1"', 'id="bar-mttr-P1"', 'id="bar-mtta-P2"', 'class="bar mtta P1"'):
        assert element in chart, element
    assert 'id="bar-mttr-P2"' not in chart and 'id="bar-mtta-P3"' not in chart  # nothing to average
    assert "47m over 1 incident" in chart and "1h 10m over 1 incident" in chart

    shots = {name: colour_counts(png) for name, (_, png) in pages.items()}
    for name, counts in shots.items():
        assert len(counts) > 20 and max(counts.values()) < sum(counts.values()) * 0.98, f"{name}: blank"
        assert counts.get(TRACK, 0) > 2000, f"{name}: no chart track painted"
    for phase in (DECLARED, ACKNOWLEDGED, MITIGATED):
        assert shots["incident"].get(phase, 0) > 300, f"timeline phase {phase} not painted"
    assert shots["open"].get(ACKNOWLEDGED, 0) > 300 and MITIGATED not in shots["open"]  # open: acked, up to now
    print(f"three pages in chromium took {elapsed:.1f} s")
