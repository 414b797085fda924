"""TFDS builder for Isaac3D (Nie et al. 2020): 737,280 renderings of a
robot arm and an object, 9 factors (object shape, robot x/y move, camera
height, object scale, lighting intensity, lighting y direction, object
colour, wall colour), from the published zip (manual download).

  python -m nearid_jax.data.builders isaac3d --manual_dir=~/isaac3d \\
      --data_dir=~/tensorflow_datasets
"""
from __future__ import annotations

from nearid_jax.data.builders import image_folder


class Isaac3d(image_folder.ImageFolderBuilder):
  """Isaac3D from Isaac3D_down128.zip or its extracted folder."""

  ROOT = "Isaac3D_down128"
  LABELS = "labels.npy"
  FACTOR_NAMES = ("object_shape", "robot_x", "robot_y", "camera_height",
                  "object_scale", "lighting_intensity", "lighting_y",
                  "object_color", "wall_color")
  FACTOR_SIZES = (3, 8, 5, 4, 4, 4, 6, 4, 4)
  GDRIVE = "1OmQ1G2wnm6eTsSFGTKFZZAh5D3nQTW1B"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Put {ROOT}.zip (Google Drive id {GDRIVE}) or its extracted folder "
      f"{ROOT}/ in the manual directory.")
