"""Shapes3D rendered on device by a small analytic ray caster.

The factor grid is Shapes3D's (Burgess & Kim 2018): 10 floor hues, 10 wall
hues, 10 object hues (0, 0.1, ..., 0.9), 8 scales linspace(0.75, 1.25, 8),
4 shapes (cube, cylinder, sphere, capsule) and 15 orientations
linspace(-30, 30, 15) degrees; 480,000 images of 64 x 64 x 3.

The scene copies the published layout: one object standing on a floor in the
corner of a room (two walls meeting behind it), one directional light,
Lambertian shading with an ambient term and a hard cast shadow. As in the
published images, the orientation factor turns the view about the vertical
axis through the object, so the walls' corner moves across the image as well
as the object: every orientation changes the image, even for the sphere.

Every pixel is one camera ray intersected analytically with the floor, the
two walls and the object (all four primitives are evaluated and the shape
selects one, which keeps the renderer branch-free under vmap); a second ray
towards the light tests the object for the shadow. `supersample=s` casts
s x s rays per pixel and averages them (anti-aliasing).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from nearid_jax.data import ground_truth

SHAPES = ("cube", "cylinder", "sphere", "capsule")

_INF = 1e9
# Scene constants (world units, y up). The object stands at the origin.
_WALL_DIST = 3.0          # the two walls are the planes z = +d and x = +d
_CAM_DIST = 6.5           # camera distance from the vertical axis
_CAM_HEIGHT = 2.0
_CAM_TARGET = (0.0, 0.9, 0.0)
_CAM_AZIMUTH0 = np.deg2rad(-45.0)   # orientation 0 looks into the corner
_FOV = np.deg2rad(42.0)
_LIGHT_DIR = np.array([0.2, 0.85, -0.75])  # towards the light
_AMBIENT = 0.42
_SATURATION, _VALUE = 0.85, 1.0
_OBJECT_HALF = 0.65       # half width of the object at scale 1


def hsv_to_rgb(h: jax.Array, s: float, v: float) -> jax.Array:
  """Hue in [0, 1) -> RGB [..., 3] in [0, 1] at saturation s and value v."""
  n = jnp.array([5.0, 3.0, 1.0])
  k = jnp.mod(n + 6.0 * jnp.asarray(h)[..., None], 6.0)
  return v - v * s * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)


def _hit_sphere(o, d, center, r):
  oc = o - center
  b = jnp.sum(oc * d, -1)
  c = jnp.sum(oc * oc, -1) - r * r
  disc = b * b - c
  t = -b - jnp.sqrt(jnp.maximum(disc, 0.0))
  t = jnp.where((disc > 0) & (t > 1e-4), t, _INF)
  n = (o + t[..., None] * d - center) / r
  return t, n


def _hit_box(o, d, lo, hi):
  inv = 1.0 / jnp.where(jnp.abs(d) < 1e-9, 1e-9, d)
  t0, t1 = (lo - o) * inv, (hi - o) * inv
  tmin, tmax = jnp.minimum(t0, t1), jnp.maximum(t0, t1)
  t_near = jnp.max(tmin, -1)
  t_far = jnp.min(tmax, -1)
  hit = (t_near < t_far) & (t_near > 1e-4)
  axis = jnp.argmax(tmin, -1)
  n = -jnp.sign(d) * jax.nn.one_hot(axis, 3)
  return jnp.where(hit, t_near, _INF), n


def _hit_vertical_cylinder(o, d, r, y0, y1):
  """Open side of the cylinder x^2 + z^2 = r^2, y0 <= y <= y1."""
  a = d[..., 0] ** 2 + d[..., 2] ** 2
  b = o[..., 0] * d[..., 0] + o[..., 2] * d[..., 2]
  c = o[..., 0] ** 2 + o[..., 2] ** 2 - r * r
  disc = b * b - a * c
  t = (-b - jnp.sqrt(jnp.maximum(disc, 0.0))) / jnp.maximum(a, 1e-9)
  y = o[..., 1] + t * d[..., 1]
  ok = (disc > 0) & (t > 1e-4) & (y >= y0) & (y <= y1)
  p = o + t[..., None] * d
  n = jnp.stack([p[..., 0], jnp.zeros_like(t), p[..., 2]], -1) / r
  return jnp.where(ok, t, _INF), n


def _hit_disk_top(o, d, r, y):
  t = (y - o[..., 1]) / jnp.where(jnp.abs(d[..., 1]) < 1e-9, 1e-9, d[..., 1])
  p = o + t[..., None] * d
  ok = (t > 1e-4) & (p[..., 0] ** 2 + p[..., 2] ** 2 <= r * r)
  n = jnp.broadcast_to(jnp.array([0.0, 1.0, 0.0]), p.shape)
  return jnp.where(ok, t, _INF), n


def _closest(*hits):
  ts = jnp.stack([h[0] for h in hits])
  ns = jnp.stack([h[1] for h in hits])
  i = jnp.argmin(ts, 0)
  t = jnp.take_along_axis(ts, i[None], 0)[0]
  n = jnp.take_along_axis(ns, i[None, ..., None], 0)[0]
  return t, n


def _hit_object(o, d, shape, half):
  """Nearest hit of rays with the object of the given shape and half width.

  A Python int `shape` intersects that primitive only; a traced one
  evaluates all four and selects (branch-free under vmap).
  """
  def cube():
    return _hit_box(o, d, jnp.array([-1.0, 0.0, -1.0]) * half,
                    jnp.array([1.0, 2.0, 1.0]) * half)

  def cylinder():
    return _closest(_hit_vertical_cylinder(o, d, half, 0.0, 2.0 * half),
                    _hit_disk_top(o, d, half, 2.0 * half))

  def sphere():
    return _hit_sphere(o, d, jnp.array([0.0, 1.0, 0.0]) * half, half)

  def capsule():
    # An upright pill: a cylinder with hemispherical ends, as tall as the
    # cube plus a third, thinner than the cylinder.
    rc = 0.7 * half
    y0, y1 = rc, 2.6 * half - rc
    return _closest(_hit_vertical_cylinder(o, d, rc, y0, y1),
                    _hit_sphere(o, d, jnp.array([0.0, 1.0, 0.0]) * y0, rc),
                    _hit_sphere(o, d, jnp.array([0.0, 1.0, 0.0]) * y1, rc))

  prims = (cube, cylinder, sphere, capsule)
  if isinstance(shape, int):
    return prims[shape]()
  hits = [f() for f in prims]
  ts = jnp.stack([h[0] for h in hits])
  ns = jnp.stack([h[1] for h in hits])
  return ts[shape], ns[shape]


def render_weights(scale, shape, orientation, size: int = 64,
                   supersample: int = 2) -> jax.Array:
  """Per-pixel shading weights of the floor, the walls and the object.

  A pixel's colour is linear in the three albedos: each of its rays returns
  albedo x shade of the surface it meets, and the pixel averages its rays.
  So one scene geometry (scale, shape, orientation) gives three weight maps
  and any hues are then a 3 x 3 colour mix; `Shapes3D` tabulates the 480
  geometries of the grid once and composes images from the table.

  Args:
    scale: scalar object scale (0.75 .. 1.25 on the grid).
    shape: scalar int, 0 cube, 1 cylinder, 2 sphere, 3 capsule.
    orientation: scalar view angle in degrees (-30 .. 30 on the grid).
    size: image side in pixels.
    supersample: rays per pixel side (anti-aliasing).

  Returns:
    [size, size, 3] float32 weights (floor, walls, object), each the mean
    over the pixel's rays of [ray meets that surface] x shade.
  """
  res = size * supersample
  az = _CAM_AZIMUTH0 + jnp.deg2rad(orientation)
  eye = jnp.stack([_CAM_DIST * jnp.sin(az), jnp.asarray(_CAM_HEIGHT),
                   -_CAM_DIST * jnp.cos(az)])
  fwd = jnp.asarray(_CAM_TARGET) - eye
  fwd = fwd / jnp.linalg.norm(fwd)
  right = jnp.cross(fwd, jnp.array([0.0, 1.0, 0.0]))
  right = right / jnp.linalg.norm(right)
  up = jnp.cross(right, fwd)
  c = (jnp.arange(res, dtype=jnp.float32) + 0.5) / res * 2.0 - 1.0
  half_w = np.tan(_FOV / 2.0)
  sx, sy = jnp.meshgrid(c * half_w, -c * half_w, indexing="xy")
  d = (fwd + sx[..., None] * right + sy[..., None] * up)
  d = d / jnp.linalg.norm(d, axis=-1, keepdims=True)
  o = jnp.broadcast_to(eye, d.shape)

  half = _OBJECT_HALF * scale
  t_obj, n_obj = _hit_object(o, d, shape, half)
  # Floor y = 0, back wall z = +W, right wall x = +W.
  t_floor = jnp.where(d[..., 1] < 0, -o[..., 1] / jnp.minimum(d[..., 1], -1e-9),
                      _INF)
  t_back = jnp.where(d[..., 2] > 0,
                     (_WALL_DIST - o[..., 2]) / jnp.maximum(d[..., 2], 1e-9),
                     _INF)
  t_side = jnp.where(d[..., 0] > 0,
                     (_WALL_DIST - o[..., 0]) / jnp.maximum(d[..., 0], 1e-9),
                     _INF)
  ts = jnp.stack([t_obj, t_floor, t_back, t_side])
  # A ray that meets nothing (none does on the grid's views) counts as wall.
  which = jnp.where(jnp.min(ts, 0) < _INF, jnp.argmin(ts, 0), 2)
  t = jnp.min(ts, 0)
  normals = jnp.stack([
      n_obj,
      jnp.broadcast_to(jnp.array([0.0, 1.0, 0.0]), d.shape),
      jnp.broadcast_to(jnp.array([0.0, 0.0, -1.0]), d.shape),
      jnp.broadcast_to(jnp.array([-1.0, 0.0, 0.0]), d.shape),
  ])
  n = jnp.take_along_axis(normals, which[None, ..., None], 0)[0]

  light = jnp.asarray(_LIGHT_DIR / np.linalg.norm(_LIGHT_DIR), jnp.float32)
  p = o + jnp.minimum(t, 1e3)[..., None] * d + 1e-3 * n
  t_shadow, _ = _hit_object(p, jnp.broadcast_to(light, d.shape), shape, half)
  lit = jnp.where((which > 0) & (t_shadow < _INF), 0.0, 1.0)
  lambert = jnp.maximum(jnp.sum(n * light, -1), 0.0)
  shade = _AMBIENT + (1.0 - _AMBIENT) * lambert * lit
  surface = jnp.stack([which == 1, which >= 2, which == 0], -1)
  w = surface * shade[..., None]
  return w.reshape(size, supersample, size, supersample, 3).mean((1, 3))


def hue_colours(floor_hue, wall_hue, object_hue) -> jax.Array:
  """[..., 3 surfaces, 3 rgb] albedos of floor, walls and object."""
  h = jnp.stack(jnp.broadcast_arrays(floor_hue, wall_hue, object_hue), -1)
  return hsv_to_rgb(h, _SATURATION, _VALUE)


def render_scene(floor_hue, wall_hue, object_hue, scale, shape, orientation,
                 size: int = 64, supersample: int = 2) -> jax.Array:
  """Renders one Shapes3D scene by ray casting.

  Args:
    floor_hue: scalar hue in [0, 1).
    wall_hue: scalar hue in [0, 1).
    object_hue: scalar hue in [0, 1).
    scale: scalar object scale (0.75 .. 1.25 on the grid).
    shape: scalar int, 0 cube, 1 cylinder, 2 sphere, 3 capsule.
    orientation: scalar view angle in degrees (-30 .. 30 on the grid).
    size: image side in pixels.
    supersample: rays per pixel side (anti-aliasing).

  Returns:
    [size, size, 3] float32 image in [0, 1].
  """
  w = render_weights(scale, shape, orientation, size, supersample)
  return jnp.clip(w @ hue_colours(floor_hue, wall_hue, object_hue), 0.0, 1.0)


_TABLE_SCALE = 65535.0


@functools.lru_cache(maxsize=4)
def _weight_table(size: int, supersample: int) -> jax.Array:
  """[4 shapes, 8 scales, 15 orientations, size, size, 3] uint16 weights.

  Weights lie in [0, 1]; uint16 (x 65535, error < 1e-5) halves the table
  (11.8 MB at 64 x 64), which every jitted sampler embeds as a constant.
  """
  sh, sc, an = np.meshgrid(np.arange(4), np.linspace(0.75, 1.25, 8),
                           np.linspace(-30.0, 30.0, 15), indexing="ij")
  sh = sh.reshape(4, 120).astype(np.int32)
  sc, an = (x.reshape(4, 120).astype(np.float32) for x in (sc, an))
  # One compile (the shape is traced), four chunks. Evaluated eagerly even
  # when first needed inside a jit trace: the table is a constant of every
  # sampler that uses it, not part of the traced step.
  fn = jax.jit(jax.vmap(functools.partial(
      render_weights, size=size, supersample=supersample)))
  with jax.ensure_compile_time_eval():
    table = jnp.stack([fn(sc[i], sh[i], an[i]) for i in range(4)])
    table = table.reshape(4, 8, 15, size, size, 3)
    table = jnp.round(jnp.clip(table, 0.0, 1.0) * _TABLE_SCALE).astype(
        jnp.uint16)
  return table


@dataclasses.dataclass(frozen=True)
class Shapes3D(ground_truth.GroundTruthDataset):
  """Shapes3D: an object in a room corner, 64x64x3, ray cast on device.

  Factor values follow the published file: hues 0, 0.1, ..., 0.9; scale
  linspace(0.75, 1.25, 8); shape 0..3 (cube, cylinder, sphere, capsule);
  orientation linspace(-30, 30, 15) degrees.

  Examples:
    >>> import jax
    >>> ds = Shapes3D()
    >>> images, idx, values = ds.sample(jax.random.key(0), 4)
    >>> images.shape, idx.shape
    ((4, 64, 64, 3), (4, 6))
  """

  supersample: int = 2

  name = "shapes3d"
  factor_names = ("floor_hue", "wall_hue", "object_hue", "scale", "shape",
                  "orientation")
  factor_sizes = (10, 10, 10, 8, 4, 15)
  observation_shape = (64, 64, 3)
  categorical = ("shape",)
  symmetries = ()

  def _factor_value_grid(self):
    hue = np.arange(10) / 10.0
    return (hue, hue, hue, np.linspace(0.75, 1.25, 8),
            np.arange(4, dtype=np.float64), np.linspace(-30.0, 30.0, 15))

  def _render(self, values, key):
    del key
    shape = jnp.clip(jnp.round(values[4]).astype(jnp.int32), 0, 3)
    return render_scene(values[0], values[1], values[2], values[3], shape,
                        values[5], self.observation_shape[0],
                        self.supersample)

  def _images_for(self, indices, key):
    # Grid points compose a tabulated geometry with three hues: exactly the
    # ray caster's image, at the cost of a gather and a 3 x 3 colour mix.
    del key
    table = _weight_table(self.observation_shape[0], self.supersample)
    i = jnp.clip(indices, 0, jnp.asarray(self.factor_sizes) - 1)
    w = table[i[:, 4], i[:, 3], i[:, 5]].astype(jnp.float32) / _TABLE_SCALE
    hues = self.indices_to_values(i)
    colours = hue_colours(hues[:, 0], hues[:, 1], hues[:, 2])
    return jnp.clip(jnp.einsum("nhws,nsc->nhwc", w, colours), 0.0, 1.0)
