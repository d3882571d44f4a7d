"""Images are read right: every mode PIL opens becomes the intended [0, 1] pixels or a one-line refusal.

Each test writes its images itself (16-bit, float, palette with transparency, alpha, CMYK,
EXIF-rotated, 32-bit integer, decompression bombs) and reads them through the library's one
decoder and through `satkit logits --data FOLDER` (whose file stores the clean pixels). Pixels are
stored as 8 bits, so the expected value of a 16-bit level v is round(v / 65535 * 255) / 255.
"""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from satkit.data import load_data
from satkit.data.stream import MAX_LABEL_CLASSES, decode_resize_into, read_labels_file
from satkit.errors import DataError
from tests.cli_helpers import assert_clean_error, run

CANVAS = 16
SIZE = (24, 20)  # (w, h): resized and center-cropped to CANVAS


def decode(path, channels=3, canvas=CANVAS) -> np.ndarray:
    out = np.zeros((channels, canvas, canvas), np.uint8)
    decode_resize_into(out, path, canvas, channels)
    return out


def folder_with(tmp_path, name, save):
    """A one-class image folder holding the one image ``save(path)`` writes."""
    d = tmp_path / "data"
    (d / "c0").mkdir(parents=True)
    p = d / "c0" / name
    save(p)
    return d, p


def cli_pixels(tmp_path, folder) -> np.ndarray:
    """The clean pixels `satkit logits` stored for the folder (uint8, (N, C, H, W))."""
    out = tmp_path / "logits.safetensors"
    run("logits", "digits/resnet-s1", "--data", folder, "--canvas", CANVAS, "-o", out)
    with safe_open(str(out), framework="pt") as f:
        return f.get_tensor("clean").numpy()


def cli_refuses(tmp_path, folder, *words):
    out = tmp_path / "logits.safetensors"
    r = run("logits", "digits/resnet-s1", "--data", folder, "--canvas", CANVAS, "-o", out, ok=False)
    assert_clean_error(r, *words)
    assert not out.exists()


def old_decode(path, channels=3, canvas=CANVAS, crop_pct=0.875) -> np.ndarray:
    """The decoder before image modes were handled one by one: plain convert(), resize, crop."""
    mode = "RGB" if channels == 3 else "L"
    with Image.open(path) as im:
        if im.mode != mode:
            im = im.convert(mode)
        w, h = im.size
        scale = (canvas / crop_pct) / min(w, h)
        nw, nh = max(canvas, round(w * scale)), max(canvas, round(h * scale))
        im = im.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - canvas) // 2, (nh - canvas) // 2
        arr = np.asarray(im.crop((left, top, left + canvas, top + canvas)), dtype=np.uint8)
    return (arr[:, :, None] if arr.ndim == 2 else arr).transpose(2, 0, 1)


# ---------------------------------------------------------------- ordinary 8-bit images: unchanged


@pytest.mark.parametrize("kind", ["rgb-jpeg", "rgb-png", "l-png", "p-gif", "1-png", "rgbx-tiff", "ycbcr-tiff"])
@pytest.mark.parametrize("channels", [3, 1])
def test_ordinary_images_decode_bit_identically_to_plain_convert(tmp_path, kind, channels):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    p = tmp_path / {"rgb-jpeg": "a.jpg", "rgb-png": "a.png", "l-png": "a.png", "p-gif": "a.gif", "1-png": "a.png",
                    "rgbx-tiff": "a.tif", "ycbcr-tiff": "a.tif"}[kind]
    im = Image.fromarray(rgb)
    {"rgb-jpeg": lambda: im.save(p, quality=90), "rgb-png": lambda: im.save(p), "l-png": lambda: im.convert("L").save(p),
     "p-gif": lambda: im.convert("P").save(p), "1-png": lambda: im.convert("1").save(p),
     "rgbx-tiff": lambda: im.convert("RGBX").save(p), "ycbcr-tiff": lambda: im.convert("YCbCr").save(p)}[kind]()
    assert np.array_equal(decode(p, channels), old_decode(p, channels))


# ---------------------------------------------------------------- 16-bit


def _png16_grey(path, a16):
    Image.fromarray(a16.astype(np.uint16)).save(path)


def _pgm16(path, a16):
    h, w = a16.shape
    path.write_bytes(b"P5\n%d %d\n65535\n" % (w, h) + a16.astype(">u2").tobytes())


def _tiff16_big_endian(path, a16):
    h, w = a16.shape  # frombytes: Pillow's convert("I;16B") clips to 255
    Image.frombytes("I;16B", (w, h), a16.astype(">u2").tobytes()).save(path)


SIXTEEN = {"png": ("g.png", _png16_grey), "pgm": ("g.pgm", _pgm16), "tiff-I;16B": ("g.tif", _tiff16_big_endian)}


@pytest.mark.parametrize("fmt", sorted(SIXTEEN))
@pytest.mark.parametrize("level", [0, 1000, 32768, 50000, 65535])
def test_sixteen_bit_grey_is_scaled_by_65535(tmp_path, fmt, level):
    name, save = SIXTEEN[fmt]
    p = tmp_path / name
    save(p, np.full((SIZE[1], SIZE[0]), level))
    with Image.open(p) as im:
        assert im.mode in ("I;16", "I;16B", "I")  # the modes a plain convert("RGB") saturated
    want = round(level / 65535 * 255)
    for channels in (3, 1):
        got = decode(p, channels)
        assert (got == want).all(), (fmt, level, channels, np.unique(got))
        assert abs(got[0, 0, 0] / 255 - level / 65535) <= 0.5 / 255  # as close as 8-bit storage allows


def test_sixteen_bit_image_of_8_bit_levels_decodes_exactly_like_the_8_bit_image(tmp_path):
    k = np.random.default_rng(0).integers(0, 256, (SIZE[1], SIZE[0]), dtype=np.uint16)
    _png16_grey(tmp_path / "g16.png", k * 257)
    Image.fromarray(k.astype(np.uint8)).save(tmp_path / "g8.png")
    for channels in (3, 1):
        assert np.array_equal(decode(tmp_path / "g16.png", channels), decode(tmp_path / "g8.png", channels))


def test_sixteen_bit_png_through_the_cli(tmp_path):
    d, _ = folder_with(tmp_path, "half.png", lambda p: _png16_grey(p, np.full((SIZE[1], SIZE[0]), 32768)))
    px = cli_pixels(tmp_path, d)
    assert (px == 128).all(), np.unique(px)  # was 255: 50 % grey saturated to white
    assert (load_data(str(d), canvas=CANVAS).images.numpy() == px).all()


def test_sixteen_bit_transparency_key_is_composited_on_white(tmp_path):
    a = np.full((SIZE[1], SIZE[0]), 0, np.uint16)
    a[:, SIZE[0] // 2:] = 7  # right half: the transparent value
    p = tmp_path / "key.png"
    Image.fromarray(a).save(p, transparency=7)
    with Image.open(p) as im:
        assert im.mode == "I;16" and im.info["transparency"] == 7
    got = decode(p, 1, canvas=SIZE[1])
    assert got[0, :, 0].max() == 0 and got[0, :, -1].min() == 255


# ---------------------------------------------------------------- float


def _float_tiff(path, value):
    Image.fromarray(np.full((SIZE[1], SIZE[0]), value, np.float32)).save(path)


@pytest.mark.parametrize("value", [0.0, 0.25, 0.5, 1.0])
def test_float_tiff_in_unit_range_is_taken_as_is(tmp_path, value):
    p = tmp_path / "f.tif"
    _float_tiff(p, value)
    with Image.open(p) as im:
        assert im.mode == "F"
    for channels in (3, 1):
        assert (decode(p, channels) == round(value * 255)).all()


def test_float_tiff_through_the_cli(tmp_path):
    d, _ = folder_with(tmp_path, "half.tif", lambda p: _float_tiff(p, 0.5))
    assert (cli_pixels(tmp_path, d) == 128).all()  # was 0


@pytest.mark.parametrize("value, words", [(2.5, ["mode F", "2.5", "[0, 1]"]), (-0.5, ["mode F", "-0.5"]),
                                          (float("nan"), ["mode F", "NaN"])])
def test_float_tiff_outside_unit_range_is_refused(tmp_path, value, words):
    d, p = folder_with(tmp_path, "f.tif", lambda p: _float_tiff(p, value))
    with pytest.raises(DataError, match="f.tif"):
        decode(p)
    cli_refuses(tmp_path, d, "f.tif", *words)


# ---------------------------------------------------------------- alpha, palette transparency


def test_palette_png_with_transparency_is_composited_on_white(tmp_path):
    im = Image.new("P", (SIZE[1], SIZE[1]), 1)
    im.putpalette([0, 0, 0] + [10, 20, 30] + [0, 0, 0] * 254)
    im.paste(0, (0, 0, SIZE[1] // 2, SIZE[1]))  # left half: index 0, transparent (its palette colour is black)
    d, p = folder_with(tmp_path, "p.png", lambda p: im.save(p, transparency=0))
    with Image.open(p) as back:
        assert back.mode == "P" and back.info.get("transparency") == 0
    got = decode(p, canvas=SIZE[1])
    assert (got[:, :, 0] == 255).all() and (got[:, :, -1] == np.array([[10], [20], [30]])).all()
    px = cli_pixels(tmp_path, d)[0]
    assert (px[:, :, 0] == 255).all() and (px[:, :, -1] == np.array([[10], [20], [30]])).all()


@pytest.mark.parametrize("mode, colour, alpha, want_rgb", [
    ("RGBA", (200, 100, 0), 255, (200, 100, 0)),
    ("RGBA", (200, 100, 0), 0, (255, 255, 255)),
    ("RGBA", (200, 100, 0), 128, (227, 177, 127)),  # c * a/255 + 255 * (1 - a/255), rounded
    ("LA", (0,), 128, (127, 127, 127)),
    ("LA", (60,), 255, (60, 60, 60)),
])
def test_alpha_is_composited_on_white(tmp_path, mode, colour, alpha, want_rgb):
    d, p = folder_with(tmp_path, "a.png", lambda p: Image.new(mode, SIZE, (*colour, alpha)).save(p))
    with Image.open(p) as back:
        assert back.mode == mode
    got = decode(p)
    assert (got == np.array(want_rgb, np.uint8)[:, None, None]).all(), np.unique(got.reshape(3, -1), axis=1)
    grey = decode(p, 1)
    if mode == "LA":
        assert (grey == want_rgb[0]).all()
    assert (cli_pixels(tmp_path, d)[0] == got).all()


def test_opaque_rgba_decodes_like_rgb(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), "RGBA").save(tmp_path / "rgba.png")
    for channels in (3, 1):
        assert np.array_equal(decode(tmp_path / "rgba.png", channels), decode(tmp_path / "rgb.png", channels))


# ---------------------------------------------------------------- CMYK, LAB


@pytest.mark.parametrize("suffix", ["jpg", "tif"])
def test_cmyk_is_converted_to_rgb(tmp_path, suffix):
    cmyk = (0, 255, 0, 0)  # magenta
    d, p = folder_with(tmp_path, f"m.{suffix}", lambda p: Image.new("CMYK", SIZE, cmyk).save(p))
    with Image.open(p) as back:
        assert back.mode == "CMYK"
    got = decode(p).astype(int)
    assert np.abs(got - np.array([255, 0, 255])[:, None, None]).max() <= 2  # JPEG may be off by a little
    assert (cli_pixels(tmp_path, d)[0] == got).all()


def test_lab_tiff_is_converted_to_rgb_and_grey(tmp_path):
    p = tmp_path / "lab.tif"
    Image.new("LAB", SIZE, (128, 128, 128)).save(p)  # L* = 50, neutral: sRGB grey 119
    with Image.open(p) as back:
        assert back.mode == "LAB"
    assert (np.abs(decode(p).astype(int) - 119) <= 1).all()
    assert (np.abs(decode(p, 1).astype(int) - 119) <= 1).all()


# ---------------------------------------------------------------- EXIF orientation


@pytest.mark.parametrize("orientation, dark", [(1, "left"), (3, "right"), (6, "top"), (8, "bottom")])
def test_exif_orientation_is_applied(tmp_path, orientation, dark):
    a = np.full((20, 40, 3), 255, np.uint8)
    a[:, :20] = 0  # stored: left half black
    exif = Image.Exif()
    exif[0x0112] = orientation
    d, p = folder_with(tmp_path, "o.jpg", lambda p: Image.fromarray(a).save(p, quality=95, exif=exif))
    got = decode(p, 1)[0].astype(int)
    half = CANVAS // 2
    region = {"left": got[:, :half - 2], "right": got[:, half + 2:], "top": got[:half - 2], "bottom": got[half + 2:]}
    other = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}[dark]
    assert region[dark].max() < 30 and region[other].min() > 225, got
    assert (cli_pixels(tmp_path, d)[0] == decode(p)).all()


# ---------------------------------------------------------------- refused


def test_32_bit_integer_image_is_refused_naming_file_and_mode(tmp_path):
    d, p = folder_with(tmp_path, "i32.tif", lambda p: Image.fromarray(np.full((SIZE[1], SIZE[0]), 1000, np.int32)).save(p))
    with Image.open(p) as back:
        assert back.mode == "I"
    with pytest.raises(DataError, match="i32.tif.*mode I"):
        decode(p)
    cli_refuses(tmp_path, d, "i32.tif", "mode I", "8- or 16-bit")


# ---------------------------------------------------------------- decompression bombs


def png_1bit(path, w, h):
    """A real 1-bit PNG of w x h black pixels (compresses to ~1/1000 of its raw size)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    c = zlib.compressobj(9)
    row = b"\0" * (1 + (w + 7) // 8)
    body = b"".join(c.compress(row) for _ in range(h)) + c.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))


# 20000^2 is past 2x PIL's limit (PIL raises); 10000^2 between 1x and 2x (PIL only warns, satkit refuses)
@pytest.mark.parametrize("side", [20000, 10000])
def test_decompression_bomb_is_a_one_line_error(tmp_path, side):
    assert Image.MAX_IMAGE_PIXELS < side * side
    d, p = folder_with(tmp_path, "bomb.png", lambda p: png_1bit(p, side, side))
    assert p.stat().st_size < 100_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(DataError, match=f"bomb.png: image too large \\({side * side:,} pixels\\)"):
            decode(p)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cli_refuses(tmp_path, d, "bomb.png", "decompression-bomb limit", f"{Image.MAX_IMAGE_PIXELS:,}")
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]  # no second stderr line


# ---------------------------------------------------------------- labels bounded before allocation


def flat_folder(tmp_path, labels_text):
    d = tmp_path / "flat"
    d.mkdir()
    for i in range(2):
        Image.fromarray(np.full((SIZE[1], SIZE[0], 3), 40 * i, np.uint8)).save(d / f"img{i}.png")
    (tmp_path / "labels.csv").write_text(labels_text)
    return d, tmp_path / "labels.csv"


@pytest.mark.parametrize("label, shown", [("999999999999", "999999999999"), (str(MAX_LABEL_CLASSES), f"{MAX_LABEL_CLASSES}"),
                                          ("9" * 5000, "99999999999999999999...")])
def test_huge_label_is_refused_before_allocating(tmp_path, label, shown):
    d, labels = flat_folder(tmp_path, f"filename,label\nimg0.png,3\nimg1.png,{label}\n")
    with pytest.raises(DataError, match="line 3"):
        read_labels_file(labels)
    out = tmp_path / "l.safetensors"
    r = run("logits", "digits/resnet-s1", "--data", d, "--labels", labels, "--canvas", CANVAS, "-o", out, ok=False)
    assert_clean_error(r, "labels.csv line 3", f"class index {shown}", f"{MAX_LABEL_CLASSES:,} classes")
    assert not out.exists()


def test_label_beyond_the_models_classes_is_refused(tmp_path):
    d, labels = flat_folder(tmp_path, "img0.png,3\nimg1.png,500\n")
    assert read_labels_file(labels).num_classes == 501
    r = run("logits", "digits/resnet-s1", "--data", d, "--labels", labels, "--canvas", CANVAS, "-o", tmp_path / "l.safetensors", ok=False)
    assert_clean_error(r, "10 classes", "has 501")


def test_leading_zeros_and_the_largest_allowed_label_are_read(tmp_path):
    _, labels = flat_folder(tmp_path, f"img0.png,0000000000003\nimg1.png,{MAX_LABEL_CLASSES - 1}\n")
    lf = read_labels_file(labels)
    assert lf.labels == {"img0.png": 3, "img1.png": MAX_LABEL_CLASSES - 1} and lf.num_classes == MAX_LABEL_CLASSES
