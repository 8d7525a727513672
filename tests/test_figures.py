"""The report's image grids: one canvas with every image where it belongs, and texts that do not collide."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from linkstyle.figures import ImageGrid, as_rgb, figure_sweeps


def _tile(value: int, shape=(8, 10)) -> np.ndarray:
    return np.full((*shape, 3), value, np.uint8)


def test_each_image_lands_at_its_cells_origin_and_the_gaps_stay_white():
    grid = ImageGrid(3, 4, (8, 10), row_group=3, col_group=2)
    for row in range(3):
        for col in range(4):
            grid.put(row, col, _tile(10 * (row * 4 + col + 1)))
    covered = np.zeros(grid.canvas.shape[:2], bool)
    for row in range(3):
        for col in range(4):
            y, x = grid.origin(row, col)
            expected = np.float32(10 * (row * 4 + col + 1)) / np.float32(255)
            np.testing.assert_array_equal(grid.canvas[y : y + 8, x : x + 10], expected)
            covered[y : y + 8, x : x + 10] = True
    assert covered.sum() == 12 * 8 * 10  # no two cells overlap
    assert (grid.canvas[~covered] == 1.0).all()
    # columns 1 and 2 belong to different groups: a wider gap between them than inside a group
    assert grid.origin(0, 2)[1] - grid.origin(0, 1)[1] > grid.origin(0, 1)[1] - grid.origin(0, 0)[1]


def test_a_cell_of_another_size_is_refused():
    grid = ImageGrid(1, 2, (8, 10))
    with pytest.raises(ValueError, match=r"cell \(0, 1\) has shape \(8, 9\)"):
        grid.put(0, 1, _tile(0, (8, 9)))


def test_one_channel_images_go_through_the_colour_map():
    x = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    grey, magma = as_rgb(x), as_rgb(x, "magma")
    assert grey.shape == magma.shape == (3, 4, 3)
    np.testing.assert_array_equal(grey[..., 0], x)
    assert not np.allclose(magma[..., 0], magma[..., 2])  # coloured, not grey


def test_long_row_labels_do_not_overlap_each_other_or_the_images():
    grid = ImageGrid(5, 3, (64, 64))
    for row in range(5):
        grid.row_label(row, f"unit {row}\nbody:entropy_std:- [weak sweep, gain 0.16]\neffect -5.68")
    fig = grid.figure("a title")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [t.get_window_extent(renderer) for t in fig.axes[0].texts[:5]]
    image = fig.axes[0].get_window_extent(renderer)
    for i, a in enumerate(labels):
        assert a.x1 <= image.x0  # left of the images
        for b in labels[i + 1 :]:
            assert not a.overlaps(b)
    plt.close(fig)


@pytest.mark.parametrize("lines", [1, 2, 3])
def test_the_title_clears_the_column_titles_however_many_lines_they_have(lines):
    grid = ImageGrid(2, 3, (64, 64))
    for col in range(3):
        grid.col_title(col, "\n".join(f"line {i}" for i in range(lines)))
    fig = grid.figure("the title")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    *columns, title = (t.get_window_extent(renderer) for t in fig.axes[0].texts)
    assert all(title.y0 >= c.y1 for c in columns)
    plt.close(fig)


def test_the_sweeps_figure_writes_png_and_pdf(tmp_path):
    rng = np.random.default_rng(0)
    images = {u: rng.integers(0, 256, (2, 3, 16, 16, 3), dtype=np.uint8) for u in (4, 7)}
    top = pd.DataFrame({"unit": [4, 7], "concept": ["body:area:+", "tail:hue:-"], "selective": [True, True],
                        "faithful": [True, False], "top_part": ["body", "tail"], "top_property": ["area", "hue"],
                        "top_delta_std": [1.5, -2.0], "gain": [0.8, 0.1], "weak_sweep": [False, True]})
    png = figure_sweeps(3, images, "clf", top, tmp_path / "sweeps.png")
    assert (tmp_path / "sweeps.png").read_bytes() == png
    assert (tmp_path / "sweeps.pdf").read_bytes().startswith(b"%PDF")
    width, height = Image.open(io.BytesIO(png)).size
    assert width > height > 0  # 6 columns of images, 2 rows
