"""utils/contact_sheet.py: page-size limit, paging, completeness of the layout,
and sample.py's grid pages."""
import numpy as np
from PIL import Image
import pytest

from model.inference import synthesis
from utils import contact_sheet as cs
from utils.drawing import thumbnail


def _boxes(page, tiles, cell):
  w = tiles * cell + (tiles - 1) * cs.TILE_GAP
  return [(x, y, x + w, y + cell) for _, _, x, y in page["items"]]


@pytest.mark.parametrize("counts,tiles", [([300] * 8, 2), ([5, 1, 40], 1),
                                          ([150, 150], 2), ([0, 3], 2)])
def test_layout_places_every_item_once_within_the_page(counts, tiles):
  cell = cs.CELL
  per_line, width = cs.choose_width(counts, tiles, top=50)
  assert width <= cs.MAX_SIDE
  pages = cs.layout(counts, tiles, per_line, top=50)
  placed = [(b, i) for page in pages for b, i, _, _ in page["items"]]
  assert sorted(placed) == [(b, i) for b, n in enumerate(counts) for i in range(n)]
  for page in pages:
    assert page["height"] <= cs.MAX_SIDE
    boxes = _boxes(page, tiles, cell)
    for x0, y0, x1, y1 in boxes:
      assert x0 >= 0 and y0 >= 50 and x1 <= width and y1 <= page["height"]
    # no two items overlap (distinct top-left corners on a regular lattice)
    assert len({b[:2] for b in boxes}) == len(boxes)
    # every item lies below its block's label on that page
    label_y = {b: y for b, _, _, y in page["labels"]}
    assert all(b in label_y and y >= label_y[b] + cs.HEADER
               for b, _, _, y in page["items"])
  # pages are full: the next page's first line would not have fitted
  for page, nxt in zip(pages, pages[1:]):
    first_b, continued, _, _ = nxt["labels"][0]
    same_block = page["labels"][-1][0] == first_b and continued
    end = page["height"] - cs.MARGIN + cs.GAP
    assert end + (0 if same_block else cs.HEADER) + cell > cs.MAX_SIDE - cs.MARGIN
  # a block is labelled once per page it appears on; "(cont.)" after the first
  for b in range(len(counts)):
    flags = [c for page in pages for bb, c, _, _ in page["labels"] if bb == b]
    assert flags[0] is False and all(flags[1:])


def test_render_pages_respects_the_size_limit_and_pages():
  rng = np.random.default_rng(0)
  tile = lambda: (rng.integers(0, 256, (48, 48), dtype=np.uint8), (0, 0, 255))
  blocks = [(f"cat{c}", [(tile(), tile()) for _ in range(300)])
            for c in range(8)]
  pages = cs.render_pages(blocks, "title", [("cat0", (255, 0, 0))], "colour:")
  step = 2 * cs.CELL + cs.TILE_GAP + cs.GAP
  per_line = (cs.MAX_SIDE - 2 * cs.MARGIN + cs.GAP) // step   # 14 pairs
  lines = 8 * -(-300 // per_line)
  lines_per_page = cs.MAX_SIDE // (cs.CELL + cs.GAP)
  assert len(pages) >= -(-lines // lines_per_page) and len(pages) <= 12
  for page in pages:
    assert max(page.size) <= cs.MAX_SIDE
  assert {p.size[0] for p in pages} == {2 * cs.MARGIN + per_line * step - cs.GAP}
  # the first item's synthesis tile is the tinted thumbnail of its sketch;
  # the item's grey frame starts one pixel above and left of it
  got = np.asarray(pages[0])
  frame = np.all(got[:, cs.MARGIN - 1] == (190, 190, 190), axis=-1)
  y0 = int(np.flatnonzero(frame)[0]) + 1
  x1 = cs.MARGIN + cs.CELL + cs.TILE_GAP
  want = np.asarray(thumbnail(blocks[0][1][0][1][0], cs.CELL, (0, 0, 255)))
  np.testing.assert_array_equal(got[y0:y0 + cs.CELL, x1:x1 + cs.CELL], want)


def test_page_names():
  assert [cs.page_name("grid.png", i) for i in range(3)] == [
      "grid.png", "grid-2.png", "grid-3.png"]


def test_a_small_sheet_is_one_landscape_page():
  blocks = [("a", [((np.full((48, 48), 255, np.uint8), (0, 0, 0)),) * 2] * 8)] * 2
  (page,) = cs.render_pages(blocks, "a title")
  assert page.size[1] <= page.size[0]


def test_sample_grid_pages(tmp_path):
  """synthesis.write_grid: one page while it fits, grid-2.png, ... after."""
  white = np.full((48, 48), 255, np.uint8)
  item = ((white, (110, 110, 110)), (white, (0, 0, 255)))
  legend = ("t", [("a", (0, 0, 255))], "colour:")
  (tmp_path / "1").mkdir()
  assert synthesis.write_grid(str(tmp_path / "1"), [("a", [item] * 30)],
                              legend) == ["grid.png"]
  (tmp_path / "2").mkdir()
  names = synthesis.write_grid(str(tmp_path / "2"), [("a", [item] * 1200)], legend)
  assert names[:2] == ["grid.png", "grid-2.png"] and len(names) >= 3
  for name in names:
    assert max(Image.open(tmp_path / "2" / name).size) <= cs.MAX_SIDE
