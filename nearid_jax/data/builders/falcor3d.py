"""TFDS builder for Falcor3D (Nie et al. 2020): 233,280 renderings of a
living room, 7 factors (lighting intensity, lighting x/y/z direction,
camera x/y/z position), from the published zip (manual download).

  python -m nearid_jax.data.builders falcor3d --manual_dir=~/falcor3d \\
      --data_dir=~/tensorflow_datasets
"""
from __future__ import annotations

from nearid_jax.data.builders import image_folder


class Falcor3d(image_folder.ImageFolderBuilder):
  """Falcor3D from Falcor3D_down128.zip or its extracted folder."""

  ROOT = "Falcor3D_down128"
  LABELS = "train-rec.labels"
  FACTOR_NAMES = ("lighting_intensity", "lighting_x", "lighting_y",
                  "lighting_z", "camera_x", "camera_y", "camera_z")
  FACTOR_SIZES = (5, 6, 6, 6, 6, 6, 6)
  GDRIVE = "1XAQfFK1x6cpN1eiovbP0hVfLTm5SsSoJ"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Put {ROOT}.zip (Google Drive id {GDRIVE}) or its extracted folder "
      f"{ROOT}/ in the manual directory.")
