"""Tests for maskedit.method.masks: polarity, loose boxes, mask files, checking and conforming."""


import numpy as np
import pytest
from PIL import Image

from maskedit.method import masks
from maskedit.errors import MaskEditError
from maskedit.media.video import Clip, conform_clip


def square_region(height=100, width=120, y0=20, x0=30, size=40, num_frames=1):
    region = np.zeros((num_frames, height, width), dtype=bool)
    region[:, y0:y0 + size, x0:x0 + size] = True
    return region


def boxes_by_flood_fill(frame, min_area):
    """Reference: tight boxes (x1, y1 exclusive) of 8-connected components, by a plain flood fill."""
    height, width = frame.shape
    seen = np.zeros_like(frame)
    boxes = []
    for y in range(height):
        for x in range(width):
            if not frame[y, x] or seen[y, x]:
                continue
            stack, pixels = [(y, x)], []
            seen[y, x] = True
            while stack:
                cy, cx = stack.pop()
                pixels.append((cy, cx))
                for ny in (cy - 1, cy, cy + 1):
                    for nx in (cx - 1, cx, cx + 1):
                        if 0 <= ny < height and 0 <= nx < width and frame[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            stack.append((ny, nx))
            if len(pixels) >= min_area:
                ys, xs = zip(*pixels)
                boxes.append((min(xs), min(ys), max(xs) + 1, max(ys) + 1))
    return sorted(boxes)


# ----- polarity


def test_polarity_conversions_are_inverses():
    region = np.random.default_rng(0).random((3, 8, 8)) < 0.3
    keep = masks.keep_mask_from_region(region)
    assert keep.dtype == np.float32 and set(np.unique(keep)) <= {0.0, 1.0}
    assert np.all(keep[region] == 0.0) and np.all(keep[~region] == 1.0)
    assert np.array_equal(masks.region_from_keep_mask(keep), region)
    assert np.array_equal(masks.region_from_keep_mask(np.array([0.2, 0.5, 0.8])), [True, False, False])


def test_mask_pixels_white_is_edit():
    region = square_region()
    pixels = masks.mask_pixels_from_region(region)
    assert pixels.shape == region.shape + (3,) and pixels.dtype == np.uint8
    assert pixels[0, 25, 35].tolist() == [255, 255, 255] and pixels[0, 0, 0].tolist() == [0, 0, 0]
    assert np.array_equal(masks.region_from_mask_pixels(pixels), region)
    assert masks.region_from_mask_pixels(np.array([[127, 128]], np.uint8)).tolist() == [[False, True]]


# ----- loose boxes


def test_one_square_gets_exact_loose_box():
    # 40x40 square at x 30..69, y 20..59: 10% of 40 = 4 in total, 2 per side.
    loose = masks.loose_boxes(square_region()[0])
    assert loose.shape == (100, 120)
    assert np.array_equal(loose, square_region(y0=18, x0=28, size=44)[0])
    assert masks.find_loose_boxes(square_region()) == [[(28, 18, 72, 62)]]


def test_grow_box_rounding():
    assert masks.grow_box((0, 0, 100, 100), 1000, 1000) == (0, 0, 105, 105)  # clipped at the origin
    assert masks.grow_box((100, 200, 200, 400), 1000, 1000) == (95, 190, 205, 410)  # 5% of 100 and of 200
    assert masks.grow_box((100, 100, 110, 119), 1000, 1000) == (99, 99, 111, 120)  # 0.5 → 1, 0.95 → 1
    assert masks.grow_box((100, 100, 109, 104), 1000, 1000) == (100, 100, 109, 104)  # 0.45, 0.2 → 0
    assert masks.grow_box((100, 100, 200, 200), 1000, 1000, margin=0.5) == (75, 75, 225, 225)


def test_two_components_give_two_boxes():
    region = np.zeros((60, 100), dtype=bool)
    region[10:20, 10:30] = True  # 20 wide, 10 high: +1 / +1 (0.5 rounds up)
    region[30:50, 60:90] = True  # 30 wide, 20 high: +2 (1.5) / +1
    boxes = masks.find_loose_boxes(region[None])[0]
    assert sorted(boxes) == [(9, 9, 31, 21), (58, 29, 92, 51)]
    loose = masks.loose_boxes(region)
    assert loose.sum() == 22 * 12 + 34 * 22
    assert not loose[25, 40]  # the gap between them stays kept


def test_diagonal_pixels_are_one_component():
    region = np.zeros((20, 20), dtype=bool)
    region[np.arange(10), np.arange(10)] = True  # 10 pixels touching only at corners
    assert masks.find_loose_boxes(region[None], margin=0.0, min_area=10) == [[(0, 0, 10, 10)]]


def test_small_components_are_ignored_and_min_area_is_configurable():
    region = square_region()[0]
    region[80:87, 100:107] = True  # 49 pixels: under the default 50
    assert np.array_equal(masks.loose_boxes(region), masks.loose_boxes(square_region()[0]))
    assert masks.loose_boxes(region, min_area=49)[85, 103]
    assert not masks.loose_boxes(np.zeros((10, 10), bool)).any()


def test_boxes_clip_at_the_border():
    region = np.zeros((1, 50, 50), dtype=bool)
    region[0, 0:20, 40:50] = True
    assert masks.find_loose_boxes(region, margin=0.2) == [[(39, 0, 50, 22)]]


def test_loose_boxes_per_frame():
    region = np.zeros((3, 40, 40), dtype=bool)
    region[0, 0:10, 0:10] = True
    region[2, 20:30, 20:30] = True
    loose = masks.loose_boxes(region, margin=0.0)
    assert np.array_equal(loose, region)


def test_components_match_flood_fill():
    rng = np.random.default_rng(1)
    for _ in range(60):
        region = rng.random((2, rng.integers(1, 18), rng.integers(1, 18))) < rng.random()
        found = masks.find_loose_boxes(region, margin=0.0, min_area=3)
        for frame, frame_boxes in zip(region, found):
            assert sorted(frame_boxes) == boxes_by_flood_fill(frame, 3)


def test_loose_boxes_on_a_full_size_clip():
    """49 frames at 832x480 (the size users use; its speed is measured by benchmarks/segmentation_speed.py)."""
    yy, xx = np.mgrid[0:480, 0:832]
    ellipses = np.stack([(yy - 240) ** 2 / 120**2 + (xx - 300 - 4 * f) ** 2 / 90**2 < 1 for f in range(49)])
    region = ellipses.copy()
    region[:, 400:410, 700:790:3] = True
    found = masks.find_loose_boxes(region)
    loose = masks.loose_boxes(region)
    for f in range(49):
        ys, xs = np.nonzero(ellipses[f])
        (x0, y0, x1, y1), = found[f]  # one box: the bars are specks under the minimum area
        width, height = xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()
        assert 0 <= xs.min() - x0 <= 0.05 * width + 1 and 0 <= x1 - xs.max() - 1 <= 0.05 * width + 1
        assert 0 <= ys.min() - y0 <= 0.05 * height + 1 and 0 <= y1 - ys.max() - 1 <= 0.05 * height + 1
        assert loose[f, y0:y1, x0:x1].all() and loose[f].sum() == (x1 - x0) * (y1 - y0)
    assert not loose[:, 395:415, 690:800].any()


# ----- boxes given by hand


def test_box_region_and_parse_box():
    region = masks.box_region(48, 64, masks.parse_box(" 10, 5,20 ,15"), num_frames=2)
    assert region.shape == (2, 48, 64) and region.sum() == 2 * 10 * 10
    assert region[1, 5, 10] and not region[1, 15, 20]
    for bad in [(10, 5, 10, 15), (0, 0, 65, 10), (-1, 0, 5, 5)]:
        with pytest.raises(MaskEditError, match="box"):
            masks.box_region(48, 64, bad)
    for bad in ["1,2,3", "a,b,c,d", "1,2,3,4,5"]:
        with pytest.raises(MaskEditError, match="x0,y0,x1,y1"):
            masks.parse_box(bad)


# ----- files


def test_mask_video_round_trip(tmp_path):
    region = np.zeros((9, 48, 64), dtype=bool)
    for f in range(9):
        region[f, 10:30, 5 + 2 * f:25 + 2 * f] = True
    masks.write_mask_video(tmp_path / "mask.mp4", region, fps=16)
    back = masks.read_mask_video(tmp_path / "mask.mp4")
    assert back.shape == region.shape and back.dtype == bool
    assert (back != region).mean() < 0.01


def test_read_mask_from_image_and_folder(tmp_path):
    pixels = masks.mask_pixels_from_region(square_region())[0]
    Image.fromarray(pixels[..., 0]).save(tmp_path / "mask.png")  # greyscale file
    assert np.array_equal(masks.read_mask_video(tmp_path / "mask.png"), square_region())
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    assert np.array_equal(masks.read_mask_video(folder), square_region(num_frames=3))


# ----- checking and conforming


def test_check_region_accepts_a_sensible_mask():
    masks.check_region(square_region(num_frames=5), num_frames=5, height=100, width=120)


def test_check_region_errors():
    empty_after_first = np.zeros((5, 32, 32), dtype=bool)
    empty_after_first[0] = True  # frame 0 does not count
    with pytest.raises(MaskEditError, match="marks nothing"):
        masks.check_region(empty_after_first)
    with pytest.raises(MaskEditError, match="nothing would be kept"):
        masks.check_region(np.ones((5, 32, 32), dtype=bool))
    with pytest.raises(MaskEditError, match="marks nothing"):
        masks.check_region(np.zeros((1, 32, 32), dtype=bool))
    with pytest.raises(MaskEditError, match="120x100 but the clip is 64x48.*fit"):
        masks.check_region(square_region(num_frames=5), num_frames=5, height=48, width=64)
    with pytest.raises(MaskEditError, match="5 frames but the clip has 9"):
        masks.check_region(square_region(num_frames=5), num_frames=9)


def test_fit_region_matches_frame_geometry():
    region = np.zeros((2, 72, 128), dtype=bool)
    region[:, :, 64:] = True  # right half
    fitted = masks.fit_region(region, 64, 48)
    assert fitted.shape == (2, 48, 64) and fitted.dtype == bool
    assert fitted[:, :, 33:].all() and not fitted[:, :, :31].any()
    assert masks.fit_region(region, 128, 72) is region
    assert masks.fit_region(region[0], 64, 48).shape == (48, 64)


def test_conform_region_follows_conform_clip():
    frames = np.zeros((30, 36, 64, 3), dtype=np.uint8)
    region = np.zeros((30, 36, 64), dtype=bool)
    for f in range(30):  # frame f is marked by a bar at column 2f, in both clip and mask
        frames[f, :, 2 * f] = 255
        region[f, :, 2 * f] = True
    source = Clip(frames, fps=30.0)
    settings = dict(num_frames=9, width=64, height=32, mode="uniform", start=3)
    clip = conform_clip(source, **settings)
    conformed = masks.conform_region(region, source, **settings)
    assert conformed.shape == (9, 32, 64)
    assert np.array_equal(conformed, clip.frames[..., 0] >= 128)

    already = masks.conform_region(conformed, source, **settings)
    assert np.array_equal(already, conformed)
    single = masks.conform_region(region[:1], source, **settings)
    assert single.shape == (9, 32, 64) and np.array_equal(single[5], single[0])
    with pytest.raises(MaskEditError, match="12 frames"):
        masks.conform_region(region[:12], source, **settings)
    with pytest.raises(MaskEditError, match="64x64 but the clip is 64x36"):
        masks.conform_region(np.zeros((30, 64, 64), bool), source, **settings)


def test_read_mask_for_clip_decodes_only_the_kept_frames_and_conforms_like_the_whole_mask(tmp_path):
    """Issue 13: a mask video of the source's length gives only the frames the clip keeps; conforming that is
    bit-identical to conforming the whole mask."""
    from maskedit.method.masks import conform_region, read_mask_for_clip, read_mask_video, write_mask_video
    from maskedit.media.video import probe_video

    rng = np.random.default_rng(0)
    region = np.zeros((23, 48, 64), bool)
    for t in range(23):
        x = 4 + t
        region[t, 10:30, x:x + 20] = True
    region[:, 40:, :8] = rng.random((23, 8, 8)) > 0.5
    path = tmp_path / "mask.mp4"
    write_mask_video(path, region, 8.0)
    source = probe_video(path)
    for num_frames, mode, start in ((9, "uniform", 0), (5, "first", 3), (17, "uniform", 4), (21, "uniform", 0)):
        kept = read_mask_for_clip(path, source, num_frames, mode, start)
        assert kept.shape == (num_frames, 48, 64)
        whole = conform_region(read_mask_video(path), source, num_frames, 64, 48, mode, start)
        assert np.array_equal(conform_region(kept, source, num_frames, 64, 48, mode, start), whole)
    with pytest.raises(MaskEditError, match="the mask has 23 frames but the clip has 30"):
        read_mask_for_clip(path, type(source)(64, 48, 30, 8.0), 9)
