"""Hand-labelled part masks as PNG index images, the format annotation tools export.

An export folder holds the images to label and says which part each index means::

    folder/images/<name>.png   RGB images to label
    folder/parts.txt           "<index><TAB><part name>" per line, for setting up the annotation tool
    folder/manifest.json       names, image size, parts, meta; written last
    folder/truth/<name>.png    exact masks (built-in world only), palette PNGs
    folder/labels/<name>.png   what the user adds: one 8-bit part index per pixel

Label PNGs are "index" or "class ID" masks (CVAT "Segmentation mask", Label Studio
brush export converted to indices, GIMP indexed/greyscale): mode "P" (palette; the
indices count, not the colours), "L" (also with alpha, "LA"), or "I"/"I;16" when the
values fit. Colour masks
(RGB/RGBA) are refused: mapping colours to parts is guesswork.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LinkstyleError
from .io import write_bytes, write_json, write_text

__all__ = ["PALETTE", "LabelError", "LabelSet", "index_png_bytes", "read_index_png", "read_label_set", "write_label_set"]

#: Index colours for viewing masks: background black, then Okabe & Ito's colour-blind-safe set.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (230, 159, 0),  # orange
    (86, 180, 233),  # sky blue
    (0, 158, 115),  # bluish green
    (240, 228, 66),  # yellow
    (0, 114, 178),  # blue
    (213, 94, 0),  # vermillion
    (204, 121, 167),  # reddish purple
    (255, 255, 255),
    (128, 128, 128),
)
_FORMAT = "linkstyle-labels-1"


class LabelError(LinkstyleError):
    """A label folder or label file that cannot be used, with what to do about it."""


@dataclass(frozen=True)
class LabelSet:
    """The labelled images of an export: images uint8 [N, H, W, 3], masks uint8 [N, H, W]."""

    images: np.ndarray
    masks: np.ndarray
    names: tuple[str, ...]
    parts: tuple[str, ...]


# ----------------------------------------------------------------------------- PNG


def _palette_bytes(n: int = 256) -> list[int]:
    """A full 256-entry palette: the named colours, then grey for unused indices."""
    flat: list[int] = []
    for i in range(n):
        flat.extend(PALETTE[i] if i < len(PALETTE) else (i, i, i))
    return flat


def index_png_bytes(mask: np.ndarray) -> bytes:
    """A uint8 [H, W] index mask as a palette PNG: tools read the indices, people see colours."""
    from PIL import Image

    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    img = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    img.putpalette(_palette_bytes())
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _rgb_png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def read_index_png(path: str | Path) -> np.ndarray:
    """One label PNG as int64 [H, W] part indices, or a ``LabelError`` saying how to export it."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("P", "L"):
                # .getdata of a "P" image are the indices; np.asarray(P image) is too (not the colours).
                return np.asarray(img, dtype=np.uint8).astype(np.int64)
            if mode in ("I", "I;16", "I;16B", "I;16L"):
                return np.asarray(img).astype(np.int64)
            if mode == "LA":  # greyscale with an alpha channel (GIMP, Krita): the grey values are the indices
                return np.asarray(img.getchannel("L"), dtype=np.uint8).astype(np.int64)
            if mode == "1":  # a 1-bit mask: 0 and 1
                return np.asarray(img, dtype=np.uint8).astype(np.int64)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise LabelError(
            f"{path}: cannot be read as a PNG label map ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "it is corrupt or not an image: export it again from the annotation tool"
        ) from exc
    if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "HSV", "LAB"):
        raise LabelError(
            f"{path}: is a colour image (PIL mode {mode}), not an index mask; export index / class-ID masks "
            "(one 8-bit value per pixel = part index, PNG mode 'P' or 'L'), not colour masks"
        )
    raise LabelError(f"{path}: has PIL mode {mode}; export an 8-bit index mask (PNG mode 'P' or 'L') instead")


# ----------------------------------------------------------------------------- export


def write_label_set(
    folder: str | Path,
    images: np.ndarray,
    names: Sequence[str],
    parts: Sequence[str],
    *,
    truth: np.ndarray | None = None,
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Export images to label (and, for the built-in world, their exact masks).

    Every file is written atomically and the manifest last, so a folder whose export was
    interrupted has no manifest and ``read_label_set`` refuses it instead of reading half of it.
    """
    folder = Path(folder)
    images = np.asarray(images)
    names = [str(n) for n in names]
    parts = [str(p) for p in parts]
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    if len(names) != images.shape[0]:
        raise ValueError(f"{len(names)} names for {images.shape[0]} images")
    if len(set(names)) != len(names):
        raise ValueError("image names must be unique")
    bad = [n for n in names if not n or "/" in n or "\\" in n or n.startswith(".")]
    if bad:
        raise ValueError(f"image names must be plain file stems, got {bad[:3]}")
    if not 1 <= len(parts) <= 256 or len(set(parts)) != len(parts):
        raise ValueError("parts must be 1 to 256 unique names")
    if truth is not None:
        truth = np.asarray(truth)
        if truth.shape != images.shape[:3]:
            raise ValueError(f"truth must be [N, H, W] = {images.shape[:3]}, got {truth.shape}")
        if truth.size and int(truth.max()) >= len(parts):
            raise ValueError(f"truth has value {int(truth.max())}, but there are {len(parts)} parts")
    manifest = folder / "manifest.json"
    manifest.unlink(missing_ok=True)  # a re-export is incomplete until its manifest is back
    # A re-export with other images must not leave the last export's behind: the exact masks in
    # truth/ stand in for the annotator's folder, and a stale map there names no exported image.
    keep = {f"{n}.png" for n in names}
    for sub in ("images", "truth"):
        for old in (folder / sub).glob("*.png") if (folder / sub).is_dir() else ():
            if old.name not in keep:
                old.unlink()
    for name, image in zip(names, images):
        write_bytes(_rgb_png_bytes(image), folder / "images" / f"{name}.png")
    if truth is not None:
        for name, mask in zip(names, truth):
            write_bytes(index_png_bytes(mask), folder / "truth" / f"{name}.png")
    write_text("".join(f"{i}\t{p}\n" for i, p in enumerate(parts)), folder / "parts.txt")
    write_json(
        {
            "format": _FORMAT,
            "names": names,
            "height": int(images.shape[1]),
            "width": int(images.shape[2]),
            "parts": parts,
            "truth": truth is not None,
            "meta": dict(meta or {}),
        },
        manifest,
    )


# ----------------------------------------------------------------------------- import


def _read_manifest(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise LabelError(f"{folder}: label folder not found; export images to label first (it must hold manifest.json and images/)")
    path = folder / "manifest.json"
    if not path.is_file():
        raise LabelError(
            f"{path}: missing; {folder} is not a complete label export (interrupted, or not an export folder): "
            "export the images to label again"
        )
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise LabelError(f"{path}: is not valid JSON ({type(exc).__name__}); export the images to label again") from exc
    keys = ("names", "height", "width", "parts")
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise LabelError(f"{path}: is not a label export manifest (needs {', '.join(keys)}); export the images to label again")
    return data


def read_label_set(
    folder: str | Path,
    labels_dir: str | Path | None = None,
    parts: Sequence[str] | None = None,
    *,
    min_images: int = 5,
) -> LabelSet:
    """The exported images that have a label PNG in ``labels_dir`` (default ``folder/labels``),
    matched by file stem, with their masks. ``parts`` (the configured part names) must equal the
    export's; None accepts the export's parts."""
    from PIL import Image

    folder = Path(folder)
    data = _read_manifest(folder)
    manifest = folder / "manifest.json"
    known = tuple(str(p) for p in data["parts"])
    if parts is not None and tuple(parts) != known:
        raise LabelError(
            f"{manifest}: the export's parts {list(known)} differ from the configured parts {list(parts)}; "
            "export the images again with the current parts, or set the parts in the config to the export's"
        )
    size = (int(data["height"]), int(data["width"]))
    names = [str(n) for n in data["names"]]
    labels = Path(labels_dir) if labels_dir is not None else folder / "labels"
    if not labels.is_dir():
        raise LabelError(
            f"{labels}: label folder not found; put one index PNG per labelled image there, "
            f"named like the image it labels (e.g. {names[0] if names else '<name>'}.png)"
        )
    files = sorted(p for p in labels.iterdir() if p.is_file() and p.suffix.lower() == ".png")
    index = {n: i for i, n in enumerate(names)}
    stray = [p for p in files if p.stem not in index]
    if stray:
        raise LabelError(
            f"{stray[0]}: matches no exported image (no {folder / 'images' / (stray[0].stem + '.png')})"
            + (f", nor do {len(stray) - 1} other label file(s)" if len(stray) > 1 else "")
            + "; name each label file like the image it labels, or move it out of the label folder"
        )
    if len(files) < min_images:
        raise LabelError(
            f"{labels}: {len(files)} labelled image(s) found, at least {min_images} are needed; "
            f"label more of the images in {folder / 'images'} and save their masks there"
        )
    allowed = ", ".join(f"{i}={p}" for i, p in enumerate(known))
    images, masks, out_names = [], [], []
    for path in files:
        mask = read_index_png(path)
        if mask.shape != size:
            raise LabelError(
                f"{path}: label is {mask.shape[1]}x{mask.shape[0]} (WxH) but the image is {size[1]}x{size[0]}; "
                "label the exported image at its own size (do not resize or crop it)"
            )
        bad = np.unique(mask[(mask < 0) | (mask >= len(known))])
        if bad.size:
            shown = ", ".join(str(int(v)) for v in bad[:10]) + (" ..." if bad.size > 10 else "")
            raise LabelError(
                f"{path}: has value(s) {shown} outside 0..{len(known) - 1}; allowed parts: {allowed}. "
                "Export index / class-ID masks whose values are these part indices"
            )
        image_path = folder / "images" / f"{path.stem}.png"
        try:
            with Image.open(image_path) as img:
                image = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except (OSError, ValueError, SyntaxError) as exc:
            raise LabelError(f"{image_path}: cannot be read ({type(exc).__name__}); export the images to label again") from exc
        if image.shape[:2] != size:
            raise LabelError(f"{image_path}: is {image.shape[1]}x{image.shape[0]}, the manifest says "
                             f"{size[1]}x{size[0]}; export the images to label again")
        images.append(image)
        masks.append(mask.astype(np.uint8))
        out_names.append(path.stem)
    order = np.argsort([index[n] for n in out_names], kind="stable")  # export order, not file-name order
    return LabelSet(
        images=np.stack([images[i] for i in order]),
        masks=np.stack([masks[i] for i in order]),
        names=tuple(out_names[i] for i in order),
        parts=known,
    )
