"""The pixel searches' shortcuts compute exactly what the plain definitions do: a faster
path that found less would be a weaker check."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from agent.deid import verify_glyphs
from agent.pixels import morph


def _running(a: npt.NDArray[np.uint8], axis: int, size: int, fn: np.ufunc,
             forward: bool) -> npt.NDArray[np.uint8]:
    """The running extreme by its definition: the window of ``size`` starting (forward)
    or ending at each pixel, cut by the frame's ends."""
    moved = np.moveaxis(a, axis, -1)
    out = np.empty_like(moved)
    n = moved.shape[-1]
    for i in range(n):
        lo, hi = (i, min(n, i + size)) if forward else (max(0, i - size + 1), i + 1)
        out[..., i] = fn.reduce(moved[..., lo:hi], axis=-1)
    return np.moveaxis(out, -1, axis)


def test_running_extremes_are_the_windows_they_stand_for() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (3, 23, 19), dtype=np.uint8)
    for axis in (1, 2):
        for size in (1, 2, 7, 21, 32, 40):
            for fn in (np.minimum, np.maximum):
                for forward in (True, False):
                    got = morph._extreme(a, axis, size, fn, forward)
                    assert np.array_equal(got, _running(a, axis, size, fn, forward))
    before = a.copy()
    morph._extreme(a, 1, 7, np.minimum, True)
    assert np.array_equal(a, before)  # the input is never written


def test_long_runs_only_on_busy_lines_equal_the_whole_opening() -> None:
    rng = np.random.default_rng(4)
    for density in (0.02, 0.3, 0.9):  # sparse specks (the shortcut) and busy stacks
        cells = (rng.random((6, 40, 48)) < density).astype(np.uint8)
        cells[0, 5:30, 7] = 1          # a long vertical run
        cells[1, 11, 3:45] = 1         # a long horizontal run
        cells[2, -3:, 9] = 1           # short runs touching the far ends
        cells[3, 20, -2:] = 1
        for axis, length in ((1, 21), (2, 32)):
            whole = morph._extreme(morph._extreme(cells, axis, length, np.minimum,
                                                          True),
                                       axis, length, np.maximum, False)
            assert np.array_equal(morph._long_runs(cells, axis, length), whole)


def test_half_resolution_is_the_floor_of_each_cells_mean() -> None:
    rng = np.random.default_rng(5)
    for shape in ((2, 9, 8), (1, 33, 35)):
        d = rng.integers(0, 256, shape, dtype=np.uint8)
        r, c = shape[1] // 2 * 2, shape[2] // 2 * 2
        w = d[:, :r, :c].astype(np.int64)
        want = (w[:, ::2, ::2] + w[:, 1::2, ::2] + w[:, ::2, 1::2] + w[:, 1::2, 1::2]) // 4
        assert np.array_equal(morph._half(d), want)


def test_verifier_window_sums_count_the_transitions_of_each_window() -> None:
    rng = np.random.default_rng(6)
    edges = (rng.random((2, 5, 60)) < 0.5).astype(np.uint8)
    for width in (1, 3, 8, 12, 13):
        sums = verify_glyphs._window_sums(edges, width)
        run = np.cumsum(edges, axis=2)
        want = run[:, :, width - 1:] - np.concatenate(
            [np.zeros((2, 5, 1), run.dtype), run[:, :, :-width]], axis=2)
        assert np.array_equal(sums[:, :, width - 1:], want)


def test_sparse_components_are_the_image_labellers_in_the_same_order() -> None:
    from agent.pixels.labels import component_boxes

    rng = np.random.default_rng(7)
    for density in (0.005, 0.05, 0.3):
        cells = (rng.random((5, 31, 40)) < density).astype(np.uint8)
        cells[1, 30, :] = 1  # a frame's last row: nothing joins it to the next frame
        cells[2, 0, :] = 1
        for full in (False, True):
            sparse = component_boxes(cells, full, sparse=True)
            image = component_boxes(cells, full, sparse=False)
            assert sparse is not None and image is not None
            for a, b in zip(sparse, image, strict=True):
                assert np.array_equal(a, b)
    assert component_boxes(np.zeros((2, 8, 8), np.uint8), True) is None


def _flood_groups(grid: npt.NDArray[np.uint8]) -> list[tuple[int, int, int, int, int]]:
    """8-connected groups by flood fill, in the order of their first cell."""
    seen = np.zeros(grid.shape, bool)
    out = []
    rows, cols = grid.shape
    for y in range(rows):
        for x in range(cols):
            if not grid[y, x] or seen[y, x]:
                continue
            stack, cells = [(y, x)], []
            seen[y, x] = True
            while stack:
                cy, cx = stack.pop()
                cells.append((cy, cx))
                for ny in range(max(0, cy - 1), min(rows, cy + 2)):
                    for nx in range(max(0, cx - 1), min(cols, cx + 2)):
                        if grid[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            stack.append((ny, nx))
            ys, xs = [c[0] for c in cells], [c[1] for c in cells]
            out.append((min(ys), min(xs), max(ys) - min(ys) + 1, max(xs) - min(xs) + 1,
                        len(cells)))
    return out


def test_verifier_groups_are_the_8_connected_components() -> None:
    rng = np.random.default_rng(8)
    for density in (0.05, 0.3, 0.6):
        grid = (rng.random((30, 20)) < density).astype(np.uint8)
        assert verify_glyphs._groups(grid) == _flood_groups(grid)
    assert verify_glyphs._groups(np.zeros((3, 4), np.uint8)) == []
