"""Label export and import: PNG index masks as annotation tools write them, and every bad input's message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from linkstyle.errors import LinkstyleError
from linkstyle.labels import (
    PALETTE,
    LabelError,
    LabelSet,
    index_png_bytes,
    read_index_png,
    read_label_set,
    write_label_set,
)

PARTS = ("background", "body", "head", "eye")
N, H, W = 6, 12, 16


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (N, H, W, 3), dtype=np.uint8)
    masks = rng.integers(0, len(PARTS), (N, H, W), dtype=np.uint8)
    return images, masks, [f"img_{i:03d}" for i in range(N)]


def _save_index(path: Path, mask: np.ndarray, mode: str = "L") -> None:
    """Write a label as a tool would: "L" greyscale, "P" palette (shuffled colours), "I;16", "LA" or "RGB"."""
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if mode == "P":
        img = Image.frombytes("P", (m.shape[1], m.shape[0]), m.tobytes())
        img.putpalette([c for i in range(256) for c in ((37 * i) % 256, (91 * i) % 256, 255 - i)])
    elif mode == "I;16":
        img = Image.fromarray(m.astype(np.uint16))
        assert img.mode.startswith("I;16")
    elif mode == "LA":
        img = Image.fromarray(m).convert("LA")
    elif mode == "RGB":
        img = Image.fromarray(np.stack([m * 40] * 3, axis=-1).astype(np.uint8))
    else:
        img = Image.fromarray(m)
    img.save(path)


@pytest.fixture
def export(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray, list[str]]:
    images, masks, names = _data()
    folder = tmp_path / "export"
    write_label_set(folder, images, names, PARTS, truth=masks, meta={"seed": 3})
    return folder, images, masks, names


def _label(folder: Path, masks: np.ndarray, names: list[str], which: range, mode: str = "L") -> None:
    for i in which:
        _save_index(folder / "labels" / f"{names[i]}.png", masks[i], mode)


def test_export_layout(export) -> None:
    folder, images, masks, names = export
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["names"] == names and manifest["parts"] == list(PARTS)
    assert (manifest["height"], manifest["width"], manifest["meta"]) == (H, W, {"seed": 3})
    assert (folder / "parts.txt").read_text() == "0\tbackground\n1\tbody\n2\thead\n3\teye\n"
    with Image.open(folder / "images" / f"{names[1]}.png") as img:
        assert img.mode == "RGB" and np.array_equal(np.asarray(img), images[1])
    with Image.open(folder / "truth" / f"{names[1]}.png") as img:
        assert img.mode == "P"  # viewable colours, indices intact
        assert np.array_equal(np.asarray(img), masks[1])
        assert tuple(img.getpalette()[3:6]) == PALETTE[1]
    assert not list(folder.rglob("*.tmp*"))


def test_a_smaller_re_export_leaves_nothing_of_the_last(export) -> None:
    """Images and exact masks of the last export that the new one lacks are gone, so the truth folder
    (the annotator's stand-in) imports cleanly."""
    folder, images, masks, names = export
    write_label_set(folder, images[:4], names[:4], PARTS, truth=masks[:4])
    for sub in ("images", "truth"):
        assert sorted(p.stem for p in (folder / sub).glob("*.png")) == names[:4]
    assert read_label_set(folder, folder / "truth", PARTS, min_images=4).names == tuple(names[:4])


def test_round_trip_from_truth(export) -> None:
    """The exported truth PNGs are valid label files: copying them over reads back the exact masks."""
    folder, images, masks, names = export
    (folder / "labels").mkdir()
    for n in names:
        (folder / "labels" / f"{n}.png").write_bytes((folder / "truth" / f"{n}.png").read_bytes())
    ls = read_label_set(folder, parts=PARTS)
    assert isinstance(ls, LabelSet)
    assert ls.names == tuple(names) and ls.parts == PARTS
    assert ls.images.dtype == np.uint8 and ls.masks.dtype == np.uint8
    assert np.array_equal(ls.images, images) and np.array_equal(ls.masks, masks)


@pytest.mark.parametrize("mode", ["L", "P", "I;16", "LA"])
def test_label_modes_read_indices(export, mode: str) -> None:
    """Palette PNGs give their indices, not their colours; 16-bit greyscale works when values fit;
    an alpha channel next to the grey values is ignored."""
    folder, images, masks, names = export
    _label(folder, masks, names, range(5), mode)
    ls = read_label_set(folder, parts=PARTS)
    assert np.array_equal(ls.masks, masks[:5]) and np.array_equal(ls.images, images[:5])


def test_only_labelled_images_count_in_export_order(export, tmp_path: Path) -> None:
    folder, _, masks, names = export
    other = tmp_path / "my_labels"
    for i in (5, 0, 3, 2, 1):
        _save_index(other / f"{names[i]}.png", masks[i])
    ls = read_label_set(folder, other, parts=None)
    assert ls.names == tuple(names[i] for i in (0, 1, 2, 3, 5))
    assert np.array_equal(ls.masks, masks[[0, 1, 2, 3, 5]])


def test_index_png_bytes_is_palette(tmp_path: Path) -> None:
    mask = np.arange(H * W, dtype=np.uint8).reshape(H, W) % 200
    (tmp_path / "m.png").write_bytes(index_png_bytes(mask))
    assert np.array_equal(read_index_png(tmp_path / "m.png"), mask)


# ----------------------------------------------------------------------------- bad inputs


def _raises(match: str, *args, **kwargs) -> LabelError:
    with pytest.raises(LabelError, match=match) as info:
        read_label_set(*args, **kwargs)
    assert isinstance(info.value, LinkstyleError)
    return info.value


def test_missing_folder_and_manifest(tmp_path: Path, export) -> None:
    _raises(r"nowhere: label folder not found", tmp_path / "nowhere")
    folder = export[0]
    (folder / "manifest.json").unlink()
    _raises(r"manifest\.json: missing; .* not a complete label export.*export the images to label again", folder)


def test_missing_labels_folder(export) -> None:
    folder = export[0]
    _raises(r"labels: label folder not found; put one index PNG per labelled image there", folder)


def test_stray_label_file(export) -> None:
    folder, _, masks, names = export
    _label(folder, masks, names, range(5))
    _save_index(folder / "labels" / "cat_07.png", masks[0])
    _raises(r"labels/cat_07\.png: matches no exported image .*name each label file like the image", folder)


def test_values_outside_parts(export) -> None:
    folder, _, masks, names = export
    _label(folder, masks, names, range(5))
    bad = masks[2].copy()
    bad[0, :3] = (4, 9, 255)
    _save_index(folder / "labels" / f"{names[2]}.png", bad)
    err = _raises(rf"{names[2]}\.png: has value\(s\) 4, 9, 255 outside 0\.\.3", folder)
    assert "0=background, 1=body, 2=head, 3=eye" in str(err)


def test_label_size_mismatch(export) -> None:
    folder, _, masks, names = export
    _label(folder, masks, names, range(5))
    _save_index(folder / "labels" / f"{names[1]}.png", np.zeros((H, W + 4), np.uint8))
    _raises(rf"{names[1]}\.png: label is {W + 4}x{H} \(WxH\) but the image is {W}x{H}", folder)


def test_colour_label(export) -> None:
    folder, _, masks, names = export
    _label(folder, masks, names, range(5))
    _save_index(folder / "labels" / f"{names[3]}.png", masks[3], "RGB")
    _raises(rf"{names[3]}\.png: is a colour image \(PIL mode RGB\).*export index / class-ID masks", folder)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_label(export, damage: str) -> None:
    folder, _, masks, names = export
    _label(folder, masks, names, range(5))
    path = folder / "labels" / f"{names[4]}.png"
    data = path.read_bytes()
    path.write_bytes(b"not a png at all" if damage == "garbage" else data[: len(data) // 2])
    _raises(rf"{names[4]}\.png: cannot be read as a PNG label map .*export it again", folder)


def test_too_few_labels(export) -> None:
    folder, _, masks, names = export
    _label(folder, masks, names, range(3))
    _raises(r"labels: 3 labelled image\(s\) found, at least 5 are needed", folder)
    assert len(read_label_set(folder, min_images=3).names) == 3


def test_parts_differ(export) -> None:
    folder, _, masks, names = export
    _label(folder, masks, names, range(5))
    _raises(r"manifest\.json: the export's parts .* differ from the configured parts", folder, parts=("background", "body"))


def test_export_rejects_bad_arrays(tmp_path: Path) -> None:
    images, masks, names = _data()
    with pytest.raises(ValueError, match="uint8"):
        write_label_set(tmp_path, images.astype(np.float32), names, PARTS)
    with pytest.raises(ValueError, match="names"):
        write_label_set(tmp_path, images, names[:2], PARTS)
    with pytest.raises(ValueError, match="truth has value"):
        write_label_set(tmp_path, images, names, PARTS[:2], truth=masks)
    assert not (tmp_path / "manifest.json").exists()
