"""Ray casting of one box room furnished with boxes and vertical cylinders: the renderer of :mod:`.synthetic`.

A :class:`Room` (what a :class:`~.synthetic.SyntheticScene` lays out) is drawn by :class:`RoomRenderer` with one ray
per pixel through K (pixel centres, :func:`mtl3d_perception.geometry.backproject`), for any pose and resolution:

- ``rgb`` ``[H,W,3]`` uint8, ``depth`` ``[H,W]`` float32 z-depth in metres (every pixel valid: the room
  is closed), ``normals`` ``[H,W,3]`` float32 unit, camera optical frame, towards the camera,
  ``semantic`` ``[H,W]`` uint8 NYU13 ids, ``boundary`` ``[H,W]`` uint8 (:func:`~mtl3d_perception.classes.label_boundaries`).

Every surface carries a texture defined in its own face coordinates (world coordinates for the room, object
coordinates for furniture), so the same surface point has the same colour in every view: a procedural
:class:`Material`, or a photo texture (:class:`~.textures.ImageMaterial`, sampled from the room's
:class:`~.textures.TextureAtlas` with the pixel footprint as mip-map level). Shading is Lambertian under one light
plus ambient; it depends on the surface point only, never on the viewer. Each primitive is tested only over the
pixel rectangle its bounding box projects to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from mtl3d_perception.classes import class_index, label_boundaries
from mtl3d_perception.data.textures import ImageMaterial, TextureAtlas
from mtl3d_perception.geometry import backproject

_EPS = 1e-6
FLOOR, CEILING, WALL = (class_index(name) for name in ("floor", "ceiling", "wall"))


@dataclass(frozen=True)
class Material:
    """A procedural 2-D texture: two colours mixed by cell noise (two scales) and stripes, optional grout lines."""

    colour_a: tuple[float, float, float]
    colour_b: tuple[float, float, float]
    cell: float  # metres, coarse cells
    fine: float  # metres, fine cells
    stripe_freq: float  # cycles per metre
    stripe_angle: float  # radians
    weights: tuple[float, float, float]  # (coarse, fine, stripes), sums to 1
    grout: float = 0.0  # fraction of a coarse cell drawn as a dark line (tiles, planks); 0 = none
    seed: int = 0
    surface: str = ""  # the surface kind (textures.SURFACES / PHOTO_SURFACES) a photo texture replaces it with


@dataclass(frozen=True)
class Primitive:
    """A box (rotated by ``yaw`` about z) or a vertical cylinder (radius ``half[0]``) with its class and material."""

    kind: str  # "box" | "cylinder"
    label: int
    center: np.ndarray  # [3] world
    half: np.ndarray  # [3] half extents in the primitive's frame; cylinders use (r, r, half height)
    yaw: float
    material: Material | ImageMaterial

    def corners(self) -> np.ndarray:
        """The 8 corners ``[8,3]`` of a world box that contains the primitive."""
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float64)
        return (signs * self.half) @ rotz(self.yaw).T + self.center

    def footprint_distance(self, xy: np.ndarray) -> np.ndarray:
        """Horizontal distance ``[N]`` from points ``xy [N,2]`` to the primitive's footprint (0 inside)."""
        q = np.asarray(xy, np.float64) - self.center[:2]
        if self.kind == "cylinder":
            return np.maximum(np.linalg.norm(q, axis=-1) - self.half[0], 0.0)
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        local = np.stack([c * q[:, 0] + s * q[:, 1], -s * q[:, 0] + c * q[:, 1]], axis=-1)
        outside = np.maximum(np.abs(local) - self.half[:2], 0.0)
        return np.linalg.norm(outside, axis=-1)


class Room(Protocol):
    """What the renderer draws: a box room ``[0, size]`` (z up, floor at z = 0) with its furniture.

    Attributes:
        size: ``[3]`` room extent in metres; light: ``[3]`` the light's world position.
        room_materials: the ``floor``, ``ceiling`` and ``wall`` materials.
        primitives: the furniture; atlas: the photo textures' atlas (None: procedural materials only).
    """

    size: np.ndarray
    light: np.ndarray
    room_materials: dict[str, Material | ImageMaterial]
    primitives: list[Primitive]
    atlas: TextureAtlas | None


@dataclass
class _RayCache:
    key: tuple = ()
    rays: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # [H*W,3] camera-frame rays with z = 1


def rotz(yaw: float) -> np.ndarray:
    """``[3,3]`` rotation by ``yaw`` (radians) about the world z axis."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class RoomRenderer:
    """Renders rooms; keeps the camera rays of the last K and size, and the primitives' bounding-box corners."""

    def __init__(self) -> None:
        self._rays = _RayCache()
        self._corners = np.zeros((0, 8, 3))  # [P,8,3] bounding-box corners of the primitives, built on first use

    def _camera_rays(self, K: np.ndarray, width: int, height: int) -> np.ndarray:
        key = (width, height, K.tobytes())
        if self._rays.key != key:
            rays = backproject(np.ones((height, width)), K)  # z = 1: the ray parameter is z-depth
            self._rays = _RayCache(key, np.ascontiguousarray(rays.reshape(-1, 3), np.float64))
        return self._rays.rays

    def render(self, room: Room, T_world_cam: np.ndarray, K: np.ndarray, size: tuple[int, int]
               ) -> dict[str, np.ndarray]:
        """Render one view of ``room``.

        Args:
            room: the room and its furniture (:class:`Room`).
            T_world_cam: ``[4,4]`` camera pose (optical frame).
            K: ``[3,3]`` intrinsics at ``size``.
            size: ``(W, H)`` in pixels.

        Returns:
            dict with ``rgb`` ``[H,W,3]`` uint8, ``depth`` ``[H,W]`` float32 (m), ``normals`` ``[H,W,3]``
            float32 (camera frame, towards the camera), ``semantic`` ``[H,W]`` uint8, ``boundary`` ``[H,W]`` uint8.
        """
        W, H = int(size[0]), int(size[1])
        T = np.asarray(T_world_cam, np.float64)
        K = np.asarray(K, np.float64)
        R, o = T[:3, :3], T[:3, 3]
        rays_cam = self._camera_rays(K, W, H)
        d = rays_cam @ R.T  # [N,3] world directions; hit point = o + t d with t the z-depth

        t, face = self._hit_room(room.size, o, d)
        d_rows = np.ascontiguousarray(d.T).reshape(3, H, W)
        t_img = t.reshape(H, W)  # views: updating them updates t and owner
        owner = np.full(t.shape, -1, np.int32)  # -1: room
        owner_img = owner.reshape(H, W)
        for k, box in enumerate(self._screen_boxes(room.primitives, T, K, W, H)):
            if box is None:
                continue
            v0, v1, u0, u1 = box
            dd = d_rows[:, v0:v1, u0:u1].reshape(3, -1)
            prim = room.primitives[k]
            th = self._hit_box(prim, o, dd) if prim.kind == "box" else self._hit_cylinder(prim, o, dd)
            tcur = t_img[v0:v1, u0:u1]
            closer = (th < tcur.ravel()).reshape(tcur.shape)
            if closer.any():
                tcur[closer] = th.reshape(tcur.shape)[closer]
                owner_img[v0:v1, u0:u1][closer] = k

        p = o + t[:, None] * d  # [N,3] world hit points
        normal_w = np.zeros_like(p)
        uv = np.zeros((p.shape[0], 2))
        mat_id = np.zeros(p.shape[0], np.int64)
        face_id = np.zeros(p.shape[0], np.int64)
        labels = np.zeros(p.shape[0], np.uint8)
        materials = [room.room_materials["floor"], room.room_materials["ceiling"], room.room_materials["wall"]]

        on_room = np.nonzero(owner < 0)[0]
        self._shade_room(p[on_room], face[on_room], on_room, normal_w, uv, mat_id, face_id, labels)
        order = np.argsort(owner, kind="stable")
        bounds = np.searchsorted(owner[order], np.arange(len(room.primitives) + 1))
        for k, prim in enumerate(room.primitives):
            sel = order[bounds[k]:bounds[k + 1]]
            if sel.size == 0:
                continue
            n_k, uv_k, f_k = self._surface(prim, p[sel])
            normal_w[sel], uv[sel], face_id[sel] = n_k, uv_k, f_k
            mat_id[sel] = len(materials)
            labels[sel] = prim.label
            materials.append(prim.material)

        pixel_m = t * np.linalg.norm(rays_cam, axis=1) / K[0, 0]
        cos_incidence = np.abs(np.einsum("ij,ij->i", normal_w, d)) / np.linalg.norm(d, axis=1)
        albedo = self._albedo(room.atlas, uv, mat_id, face_id, materials, pixel_m, cos_incidence)
        to_light = room.light - p
        dist = np.linalg.norm(to_light, axis=1)
        lambert = np.maximum(np.einsum("ij,ij->i", normal_w, to_light) / dist, 0.0)
        shade = 0.35 + 0.75 * lambert / (1.0 + 0.04 * dist**2)
        rgb = np.clip(albedo * shade[:, None] * 255.0 + 0.5, 0, 255).astype(np.uint8)

        normals = normal_w @ R  # world -> camera: R^T n
        flip = np.einsum("ij,ij->i", normals, rays_cam) > 0  # keep them towards the camera
        normals[flip] *= -1.0
        semantic = labels.reshape(H, W)
        return {
            "rgb": rgb.reshape(H, W, 3),
            "depth": t.reshape(H, W).astype(np.float32),
            "normals": normals.reshape(H, W, 3).astype(np.float32),
            "semantic": semantic,
            "boundary": label_boundaries(semantic),
        }

    @staticmethod
    def _albedo(atlas, uv, mat_id, face_id, materials, pixel_m, cos_incidence) -> np.ndarray:
        """Albedo ``[N,3]``: procedural materials by :func:`_texture`, photo textures from the atlas with the
        pixel footprint ``pixel_m / sqrt(cos_incidence)`` (metres; the area-preserving isotropic size) as
        the mip-map level of detail."""
        is_image = np.array([isinstance(m, ImageMaterial) for m in materials])
        if not is_image.any():
            return _texture(uv, mat_id, face_id, materials)
        albedo = np.zeros((len(uv), 3))
        img_px = is_image[mat_id]
        proc = np.nonzero(~img_px)[0]
        if proc.size:
            procedural = [m if not isinstance(m, ImageMaterial) else materials[0] for m in materials]
            albedo[proc] = _texture(uv[proc], mat_id[proc], face_id[proc], procedural)
        sel = np.nonzero(img_px)[0]
        dummy = ImageMaterial(0, ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)), True)
        mats = [m if isinstance(m, ImageMaterial) else dummy for m in materials]
        A = np.array([m.affine for m in mats])[mat_id[sel]]  # [M,2,3]
        u, v = uv[sel, 0], uv[sel, 1]
        shift = np.array([m.face_shift for m in mats])[mat_id[sel]] * face_id[sel]
        xy = np.stack([A[:, 0, 0] * u + A[:, 0, 1] * v + A[:, 0, 2] + shift,
                       A[:, 1, 0] * u + A[:, 1, 1] * v + A[:, 1, 2] + shift], axis=1)
        texels_per_m = np.sqrt(np.abs(A[:, 0, 0] * A[:, 1, 1] - A[:, 0, 1] * A[:, 1, 0]))
        footprint = pixel_m[sel] / np.sqrt(np.maximum(cos_incidence[sel], 0.05)) * texels_per_m
        albedo[sel] = atlas.sample(np.array([m.image for m in mats])[mat_id[sel]], xy,
                                        np.array([m.repeat for m in mats])[mat_id[sel]], footprint)
        return albedo

    @staticmethod
    def _hit_room(room_size: np.ndarray, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exit distance of rays from inside the room box and the face hit (axis * 2 + (1 if the + side))."""
        with np.errstate(divide="ignore", invalid="ignore"):
            bound = np.where(d > 0, room_size, 0.0)
            ts = (bound - o) / d  # [N,3]
        ts[~np.isfinite(ts) | (ts <= 0)] = np.inf
        axis = np.argmin(ts, axis=1)
        t = np.take_along_axis(ts, axis[:, None], axis=1)[:, 0]
        positive = np.take_along_axis(d, axis[:, None], axis=1)[:, 0] > 0
        return t, axis * 2 + positive

    @staticmethod
    def _shade_room(p, face, idx, normal_w, uv, mat_id, face_id, labels) -> None:
        axis = face // 2
        positive = face % 2 == 1
        n = np.zeros((idx.size, 3))
        n[np.arange(idx.size), axis] = np.where(positive, -1.0, 1.0)  # room normals point inwards
        normal_w[idx] = n
        # face coordinates: floor/ceiling (x, y); walls (horizontal along the wall, z)
        u = np.where(axis == 0, p[:, 1], p[:, 0])
        v = np.where(axis == 2, p[:, 1], p[:, 2])
        uv[idx, 0], uv[idx, 1] = u, v
        is_floor, is_ceiling = (axis == 2) & ~positive, (axis == 2) & positive
        mat_id[idx] = np.where(is_floor, 0, np.where(is_ceiling, 1, 2))
        face_id[idx] = face
        labels[idx] = np.where(is_floor, FLOOR, np.where(is_ceiling, CEILING, WALL))

    def _screen_boxes(self, primitives: list[Primitive], T: np.ndarray, K: np.ndarray, W: int, H: int
                      ) -> list[tuple[int, int, int, int] | None]:
        """Per primitive, the pixel rectangle ``(v0, v1, u0, u1)`` (end-exclusive) its projection may cover,
        or None when it is entirely behind the camera or outside the image."""
        if len(self._corners) != len(primitives):
            self._corners = np.stack([p.corners() for p in primitives]) if primitives else np.zeros((0, 8, 3))
        cam = (self._corners - T[:3, 3]) @ T[:3, :3]  # [P,8,3] world -> camera: R^T (p - o)
        z = cam[..., 2]
        near = z <= 0.05
        zs = np.where(near, 1.0, z)
        u = K[0, 0] * cam[..., 0] / zs + K[0, 2]
        v = K[1, 1] * cam[..., 1] / zs + K[1, 2]
        u0 = np.clip(np.floor(u.min(axis=1)), 0, W).astype(int)
        u1 = np.clip(np.ceil(u.max(axis=1)) + 1, 0, W).astype(int)
        v0 = np.clip(np.floor(v.min(axis=1)), 0, H).astype(int)
        v1 = np.clip(np.ceil(v.max(axis=1)) + 1, 0, H).astype(int)
        straddles = near.any(axis=1)  # crosses the camera plane: the projection is unbounded, test every ray
        behind = near.all(axis=1)
        boxes = []
        for b, s, a0, a1, c0, c1 in zip(behind.tolist(), straddles.tolist(), v0.tolist(), v1.tolist(),
                                        u0.tolist(), u1.tolist()):
            if b:
                boxes.append(None)
            elif s:
                boxes.append((0, H, 0, W))
            else:
                boxes.append((a0, a1, c0, c1) if a0 < a1 and c0 < c1 else None)
        return boxes

    @staticmethod
    def _hit_box(prim: Primitive, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Ray/box entry distance ``[N]`` (inf for a miss) with the slab method in the box frame.

        ``d`` is ``[3,N]`` (one contiguous row per axis: reductions over a trailing axis of 3 are slow).
        """
        c, s = math.cos(prim.yaw), math.sin(prim.yaw)
        ol = rotz(-prim.yaw) @ (o - prim.center)
        dl = (c * d[0] + s * d[1], -s * d[0] + c * d[1], d[2])  # rotate by -yaw about z
        tmin = tmax = None
        with np.errstate(divide="ignore", invalid="ignore"):
            for k in range(3):
                inv = 1.0 / dl[k]
                t1 = (-prim.half[k] - ol[k]) * inv
                t2 = (prim.half[k] - ol[k]) * inv
                lo, hi = np.fmin(t1, t2), np.fmax(t1, t2)  # fmin/fmax skip the NaN of 0 * inf
                tmin = lo if tmin is None else np.fmax(tmin, lo)
                tmax = hi if tmax is None else np.fmin(tmax, hi)
        hit = (tmax >= tmin) & (tmin > _EPS)
        return np.where(hit, tmin, np.inf)

    @staticmethod
    def _hit_cylinder(prim: Primitive, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Ray/vertical-cylinder entry distance ``[N]``: the side or the cap facing the camera (``d`` is ``[3,N]``)."""
        r, hh = prim.half[0], prim.half[2]
        ol = o - prim.center
        dx, dy, dz = d[0], d[1], d[2]
        a = dx * dx + dy * dy
        b = 2.0 * (ol[0] * dx + ol[1] * dy)
        c = ol[0] ** 2 + ol[1] ** 2 - r * r
        disc = b * b - 4 * a * c
        with np.errstate(divide="ignore", invalid="ignore"):
            t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
            z = ol[2] + t_side * dz
            side_ok = (disc >= 0) & (a > 1e-12) & (t_side > _EPS) & (np.abs(z) <= hh)
            cap_z = hh if ol[2] > hh else -hh
            t_cap = (cap_z - ol[2]) / dz
            xc, yc = ol[0] + t_cap * dx, ol[1] + t_cap * dy
            cap_ok = (np.abs(ol[2]) > hh) & (t_cap > _EPS) & (xc * xc + yc * yc <= r * r)
        t = np.where(side_ok, t_side, np.inf)
        return np.where(cap_ok & (t_cap < t), t_cap, t)

    @staticmethod
    def _surface(prim: Primitive, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World normals ``[M,3]``, face texture coordinates ``[M,2]`` and face ids ``[M]`` at hit points ``p``."""
        R = rotz(prim.yaw)
        q = (p - prim.center) @ R  # world -> primitive frame: R^T (p - c)
        m = q.shape[0]
        if prim.kind == "box":
            rel = np.abs(q) / prim.half
            axis = np.argmax(rel, axis=1)
            sign = np.sign(q[np.arange(m), axis])
            n_local = np.zeros_like(q)
            n_local[np.arange(m), axis] = sign
            # the two coordinates spanning the face
            u = np.where(axis == 0, q[:, 1], q[:, 0])
            v = np.where(axis == 2, q[:, 1], q[:, 2])
            face = axis * 2 + (sign > 0)
        else:
            r, hh = prim.half[0], prim.half[2]
            cap = np.abs(q[:, 2]) >= hh - 1e-7
            radial = q[:, :2] / np.maximum(np.linalg.norm(q[:, :2], axis=1, keepdims=True), 1e-12)
            n_local = np.where(cap[:, None], np.array([0.0, 0.0, 1.0]) * np.sign(q[:, 2:3]),
                               np.concatenate([radial, np.zeros((m, 1))], axis=1))
            u = np.where(cap, q[:, 0], np.arctan2(q[:, 1], q[:, 0]) * r)
            v = np.where(cap, q[:, 1], q[:, 2])
            face = np.where(cap, 1 + (q[:, 2] > 0), 0)
        return n_local @ R.T, np.stack([u, v], axis=1), face.astype(np.int64)



# --------------------------------------------------------------------------------------------------
# Procedural textures
# --------------------------------------------------------------------------------------------------


def _hash2(i: np.ndarray, j: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """A per-cell pseudo-random value in [0, 1) from integer cell coordinates (a small integer hash)."""
    h = (i * 73856093) ^ (j * 19349663) ^ (seed * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFF).astype(np.float64) / 65536.0


def _texture(uv: np.ndarray, mat_id: np.ndarray, face_id: np.ndarray, materials: list[Material]) -> np.ndarray:
    """Albedo ``[N,3]`` in [0,1] of every pixel from its face coordinates and material (one vectorised pass)."""
    table = np.array([[m.cell, m.fine, m.stripe_freq, m.stripe_angle, *m.weights, m.grout] for m in materials])
    cell, fine, freq, angle, w0, w1, w2, grout = (np.take(col, mat_id) for col in table.T)
    col_a = np.take(np.array([m.colour_a for m in materials]), mat_id, axis=0)
    col_b = np.take(np.array([m.colour_b for m in materials]), mat_id, axis=0)
    seeds = np.take(np.array([m.seed for m in materials], np.int64), mat_id) * 8 + face_id
    u, v = uv[:, 0], uv[:, 1]
    gu, gv = u / cell, v / cell
    iu, iv = np.floor(gu), np.floor(gv)
    coarse = _hash2(iu.astype(np.int64), iv.astype(np.int64), seeds)
    fine_v = _hash2(np.floor(u / fine).astype(np.int64), np.floor(v / fine).astype(np.int64), seeds + 3)
    stripes = 0.5 + 0.5 * np.sin(2 * math.pi * freq * (u * np.cos(angle) + v * np.sin(angle)))
    mix = w0 * coarse + w1 * fine_v + w2 * stripes
    line = ((gu - iu) < grout) | ((gv - iv) < grout)
    albedo = col_a * (1.0 - mix[:, None]) + col_b * mix[:, None]
    return np.where(line[:, None], albedo * 0.45, albedo)
