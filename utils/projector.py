"""TensorBoard projector export of sample.py's samples.npz.

Writes, into one folder, what TensorBoard's Embedding Projector opens
(``tensorboard --logdir FOLDER``, then the PROJECTOR tab): the codes z as a
tab-separated tensor file, a metadata TSV (one row per code: sample index,
category, level-k and level-l label, test-split reference index), a sprite
image of the sketches (shown on hover and as points) and
``projector_config.pbtxt`` tying them together with paths relative to it
(the projector refuses paths outside the config's folder).  PCA, t-SNE and
UMAP of the codes then run in the browser: the interactive result.jpg.

The sprite is a square grid of ceil(sqrt(N)) x ceil(sqrt(N)) thumbnails,
row by row in sample order, as the projector expects; it must stay within the
projector's 8192 x 8192 px, so the thumbnails shrink from THUMB px as N grows
(down to MIN_THUMB px; more sketches are refused).
"""
import math
import os

import numpy as np
from google.protobuf import text_format
from tensorboard.plugins.projector import projector_config_pb2 as pb

from utils import drawing
from utils.errors import UserError
from utils.io import atomic_path, atomic_write_text

CONFIG_NAME = "projector_config.pbtxt"   # the name the projector looks for
TENSOR_NAME = "codes.tsv"
METADATA_NAME = "metadata.tsv"
SPRITE_NAME = "sprite.png"
FILES = (TENSOR_NAME, METADATA_NAME, SPRITE_NAME, CONFIG_NAME)
SPRITE_LIMIT = 8192     # px, the projector's largest sprite side
THUMB = 64              # px, the thumbnail size while the sprite allows it
MIN_THUMB = 8
COLUMNS = ("sample", "category", "level_k", "level_l", "ref_index")
ROLE = "visualization"


def thumb_size(n, thumb=THUMB):
  """(thumbnail px, columns) of the sprite of ``n`` sketches."""
  cols = max(1, math.ceil(math.sqrt(n)))
  size = min(int(thumb), SPRITE_LIMIT // cols)
  if size < MIN_THUMB:
    raise UserError(f"{n} samples do not fit the projector's {SPRITE_LIMIT} px "
                    f"sprite with thumbnails of at least {MIN_THUMB} px: "
                    f"sample at most {(SPRITE_LIMIT // MIN_THUMB) ** 2}")
  return size, cols


def sprite_image(images, colours, thumb=THUMB):
  """PIL RGB sprite: sketch i (tinted with colours[i]) in cell (i // cols,
  i % cols) of a white square grid of cols x cols ``thumb_size`` cells."""
  size, cols = thumb_size(len(images), thumb)
  img, _ = drawing.new_canvas(cols * size, cols * size)
  for i, (gray, rgb) in enumerate(zip(images, colours)):
    img.paste(drawing.thumbnail(gray, size, rgb),
              ((i % cols) * size, (i // cols) * size))
  return img, size


def _clean(text):
  return str(text).replace("\t", " ").replace("\n", " ")


def metadata_tsv(samples):
  """The metadata TSV text: a header row (needed with several columns), then
  one row per code; labels as words ("k3", "l1") so the projector colours
  them as categories, "none" where a sample has no category / reference."""
  cats = samples["categories"]
  lines = ["\t".join(COLUMNS)]
  for i, (c, k, l, r) in enumerate(zip(samples["category"], samples["label_k"],
                                       samples["label_l"], samples["ref_index"])):
    name = _clean(cats[c]) if 0 <= c < len(cats) else "none"
    lines.append(f"{i}\t{name}\tk{k}\tl{l}\t{r if r >= 0 else 'none'}")
  return "\n".join(lines) + "\n"


def tensor_tsv(z):
  """The codes as tab-separated rows (the projector's tensor_path format)."""
  return "".join("\t".join(f"{x:.7g}" for x in row) + "\n"
                 for row in np.asarray(z, np.float32))


def config_text(n, dim, thumb, name="codes z"):
  """projector_config.pbtxt (text-format ProjectorConfig) for the files."""
  config = pb.ProjectorConfig()
  emb = config.embeddings.add()
  emb.tensor_name = name
  emb.tensor_path = TENSOR_NAME
  emb.tensor_shape.extend([int(n), int(dim)])
  emb.metadata_path = METADATA_NAME
  emb.sprite.image_path = SPRITE_NAME
  emb.sprite.single_image_dim.extend([int(thumb), int(thumb)])
  return text_format.MessageToString(config)


def write_projector(samples, folder, colours, thumb=THUMB):
  """Writes the four files into ``folder`` (config last, so a folder with a
  config is complete); returns {"folder", "thumb", "sprite_size"}."""
  z = samples["z"]
  sprite, size = sprite_image(samples["images"], colours, thumb)
  atomic_write_text(os.path.join(folder, TENSOR_NAME), tensor_tsv(z), ROLE)
  atomic_write_text(os.path.join(folder, METADATA_NAME), metadata_tsv(samples),
                    ROLE)
  with atomic_path(os.path.join(folder, SPRITE_NAME), ROLE) as tmp:
    sprite.save(tmp, "PNG")
  atomic_write_text(os.path.join(folder, CONFIG_NAME),
                    config_text(len(z), z.shape[1], size), ROLE)
  return dict(folder=folder, thumb=size, sprite_size=sprite.size)
