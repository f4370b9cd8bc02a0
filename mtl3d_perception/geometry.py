"""The one owner of the project's geometric conventions (DESIGN §4).

- Units SI; camera frames are optical frames (x right, y down, z forward).
- ``T_a_b`` (4x4) maps points from frame b into frame a; a frame's pose is ``T_world_cam``;
  a source view's relative pose is ``T_src_ref = inv(T_world_src) @ T_world_ref``.
- ``K`` (3x3, pixels) belongs to one image size; pixel (u, v) is the centre of column u, row v, so a
  resize by (sx, sy) maps ``cx -> (cx + 0.5) * sx - 0.5``.
- Depth is z-depth in metres; invalid is NaN in float images and 0 in uint16 millimetre images.
- Normals are unit vectors in the camera optical frame pointing towards the camera.
- Quaternions are ``(x, y, z, w)``, the ROS order.

Functions marked "(numpy or torch)" accept either and return the same kind, batched over leading dims.
Everything else in the project imports these helpers instead of re-deriving them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation, Slerp

MM_PER_M = 1000.0
MIN_Z = 1e-6  # a point closer than this to a camera plane does not project
EDGE_REL_JUMP = 0.05  # a neighbour more than 5% farther or nearer is across a depth edge
MAX_FOOTPRINT_PX = 8  # reproject_depth: a source pixel's splat spans at most this many pixels a side (grazing views)
# reproject_depth: a source pixel's footprint reaches this far from its centre (source pixels). Half a pixel leaves
# slivers between neighbours projected at their own depths on a slanted surface (a retrial: 0.54 % holes, 320x240 depth
# into 540x360 colour, 10 cm, 6 deg); 0.55 closes them (99.99 %) and widens the near side of a depth edge by 0.05 px
# (abs rel against the truth 0.0023 -> 0.0026 there; the coarse-grid splat before it: 0.0031)
FOOTPRINT_HALF_PX = 0.55

# --------------------------------------------------------------------------------------------------
# SE(3)
# --------------------------------------------------------------------------------------------------


def _is_torch(x) -> bool:
    return isinstance(x, torch.Tensor)


def _transpose(x):
    return x.transpose(-1, -2) if _is_torch(x) else np.swapaxes(x, -1, -2)


def z_up_rotation(T_world_cams: np.ndarray) -> np.ndarray:
    """The axis-aligned rotation ``R_odom_world`` [4,4] that turns a world whose cameras look "down" along another
    axis into a z-up one (REP 103: z up), from camera poses ``T_world_cams`` [N,4,4] (optical frames: +y down).

    The cameras' mean down direction is snapped to the nearest world axis (a y-up HoloLens world: -y); the result is
    the quarter or half turn taking that axis to -z, or the identity when it already is -z (a z-up world, where a
    camera's pitch must not tilt the world). Poses of held or robot cameras are upright on average; this is not a
    gravity estimate.
    """
    down = np.asarray(T_world_cams, np.float64)[:, :3, 1].mean(0)
    axis = int(np.argmax(np.abs(down)))
    a = np.zeros(3)
    a[axis] = np.sign(down[axis]) or 1.0
    R = np.eye(4)
    if a[2] == -1.0:
        return R
    r3 = -a  # R a = -z: the third row is -a
    r1 = np.zeros(3)
    r1[(axis + 1) % 3] = 1.0  # any axis orthogonal to a
    r2 = np.cross(r3, r1)  # rows r1, r2, r3 right-handed: r3 = r1 x r2
    R[:3, :3] = np.stack([r1, r2, r3])
    return R


def invert_se3(T):
    """Inverse of rigid transforms ``T [...,4,4]`` (numpy or torch), using R^T rather than a general inverse."""
    R = T[..., :3, :3]
    t = T[..., :3, 3:]
    Rt = _transpose(R)
    out = T.clone() if _is_torch(T) else np.array(T, copy=True)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -(Rt @ t)
    return out


def relative_pose(T_world_src, T_world_ref):
    """``T_src_ref = inv(T_world_src) @ T_world_ref`` (numpy or torch): maps reference-camera points into the source camera."""
    return invert_se3(T_world_src) @ T_world_ref


def _apply_linear(M, x):
    """``M [...,3,3]`` applied to vectors ``x [..., *spatial, 3]`` whose leading dims match M's batch dims."""
    if M.ndim == 2:
        return x @ _transpose(M)
    batch = M.shape[:-2]
    flat = x.reshape(*batch, -1, 3)
    out = flat @ _transpose(M)
    return out.reshape(x.shape)


def transform_points(T_a_b, points_b):
    """Points ``[..., *spatial, 3]`` in frame b -> frame a with ``T_a_b [...,4,4]`` (numpy or torch)."""
    out = _apply_linear(T_a_b[..., :3, :3], points_b)
    t = T_a_b[..., :3, 3]
    if T_a_b.ndim == 2:
        return out + t
    extra = points_b.ndim - 1 - (T_a_b.ndim - 2)
    return out + t.reshape(*t.shape[:-1], *([1] * extra), 3)


def quat_to_rotation(q_xyzw) -> np.ndarray:
    """Unit quaternion(s) ``(x, y, z, w)`` ``[...,4]`` -> rotation matrices ``[...,3,3]`` (normalised first)."""
    q = np.asarray(q_xyzw, dtype=np.float64)
    norm = np.linalg.norm(q, axis=-1)
    if not np.all(np.isfinite(q)) or np.any(norm < 1e-9):
        msg = f"quaternion {q.tolist()} is not finite and non-zero"
        raise ValueError(msg)
    return Rotation.from_quat(q.reshape(-1, 4)).as_matrix().reshape(*q.shape[:-1], 3, 3)


def rotation_to_quat(R) -> np.ndarray:
    """Rotation matrices ``[...,3,3]`` -> unit quaternions ``(x, y, z, w)`` ``[...,4]`` with w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    q = Rotation.from_matrix(R.reshape(-1, 3, 3)).as_quat()
    q = np.where(q[:, 3:4] < 0, -q, q)
    return q.reshape(*R.shape[:-2], 4)


def pose_from_quat_trans(q_xyzw, t) -> np.ndarray:
    """Quaternion ``(x, y, z, w)`` and translation (metres) -> 4x4 transform."""
    T = np.eye(4)
    T[:3, :3] = quat_to_rotation(q_xyzw)
    T[:3, 3] = np.asarray(t, dtype=np.float64)
    return T


def pose_to_quat_trans(T) -> tuple[np.ndarray, np.ndarray]:
    """4x4 transform -> (quaternion ``(x, y, z, w)``, translation)."""
    T = np.asarray(T, dtype=np.float64)
    return rotation_to_quat(T[:3, :3]), T[:3, 3].copy()


def interpolate_pose(T0, T1, alpha: float) -> np.ndarray:
    """Pose at fraction ``alpha`` between ``T0`` (alpha=0) and ``T1`` (alpha=1): SLERP rotation, linear translation."""
    T0 = np.asarray(T0, dtype=np.float64)
    T1 = np.asarray(T1, dtype=np.float64)
    slerp = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([T0[:3, :3], T1[:3, :3]])))
    T = np.eye(4)
    T[:3, :3] = slerp([alpha]).as_matrix()[0]
    T[:3, 3] = (1.0 - alpha) * T0[:3, 3] + alpha * T1[:3, 3]
    return T


def rotation_angle(R) -> float:
    """Angle of rotation matrix ``R`` in radians, in [0, pi]."""
    R = np.asarray(R, dtype=np.float64)
    cos = (np.trace(R[..., :3, :3], axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.arccos(np.clip(cos, -1.0, 1.0))


NOT_A_ROTATION_TOL = 1e-2  # |R^T R - I| beyond this is not a rotation (refused), below it is projected
ORTHONORMAL_EPS = 1e-9  # |R^T R - I| at or below this is a rotation already (kept bit for bit)
# tf2's QUATERNION_NORMALIZATION_TOLERANCE (ros2/geometry2 tf2/src/buffer_core.cpp, setTransformImpl):
# a transform whose quaternion has |x^2 + y^2 + z^2 + w^2 - 1| >= 10e-3 is ignored (TF_DENORMALIZED_QUATERNION).
QUATERNION_NORM_TOL = 10e-3


def _finite_matrix(x, shape: tuple[int, int], name: str) -> np.ndarray:
    """``x`` as a float64 array of ``shape``; ValueError naming ``name`` for another shape or a NaN / inf."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape != shape:
        msg = f"{name} has shape {x.shape}, expected {shape}"
        raise ValueError(msg)
    if not np.all(np.isfinite(x)):
        msg = f"{name} contains NaN or inf: {x.tolist()}"
        raise ValueError(msg)
    return x


def project_to_so3(R) -> np.ndarray:
    """The rotation nearest to ``R [3,3]`` in the Frobenius norm: ``U diag(1, 1, det(U V^T)) V^T`` from ``R = U S V^T``.

    The orthogonal Procrustes solution (Horn, Hilden & Negahdaripour, JOSA A 1988); float64 numpy.
    """
    U, _, Vt = np.linalg.svd(np.asarray(R, np.float64))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def check_rotation(R, name: str = "rotation") -> np.ndarray:
    """``R`` as a float64 3x3 matrix that is a rotation up to :data:`NOT_A_ROTATION_TOL` (the one rule: poses through
    :func:`to_rigid`, camera_info's rectification R).

    Raises:
        ValueError: naming ``name``: another shape, NaN or inf, or not orthonormal with det +1.
    """
    R = _finite_matrix(R, (3, 3), name)
    err = float(np.abs(R.T @ R - np.eye(3)).max())
    det = float(np.linalg.det(R))
    if err > NOT_A_ROTATION_TOL or det <= 0:
        msg = (f"{name} is not orthonormal with det +1 (|R^T R - I| = {err:.2e}, det = {det:.4f}); "
               f"rotations within {NOT_A_ROTATION_TOL:g} are projected onto SO(3), this one is not a rotation")
        raise ValueError(msg)
    return R


def to_rigid(T, name: str = "pose", atol: float = 1e-4) -> tuple[np.ndarray, bool]:
    """``T`` as a float64 4x4 rigid transform, and whether its rotation had to be projected onto SO(3).

    Real poses are often orthonormal only to ~1e-4 (KinectFusion / 7-Scenes files printed with 6 decimals,
    float32 odometry): a rotation block with ``|R^T R - I| <= NOT_A_ROTATION_TOL`` and det > 0 is replaced by
    the nearest rotation (:func:`project_to_so3`); one within ``ORTHONORMAL_EPS`` is returned unchanged. The
    last row is set to exactly ``[0, 0, 0, 1]`` once it is within ``atol``. This is the one pose check of the
    project: sequence folders, ``mtl3d bag``, runtime frames and the TF buffer all call it.

    Raises:
        ValueError: naming ``name`` and the problem: wrong shape, NaN or inf, a last row that is not
            ``[0, 0, 0, 1]``, or a block that is not a rotation (``|R^T R - I| > NOT_A_ROTATION_TOL`` or det <= 0).
    """
    T = _finite_matrix(T, (4, 4), name)
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=atol):
        msg = f"{name} last row is {T[3].tolist()}, expected [0, 0, 0, 1]"
        raise ValueError(msg)
    R = check_rotation(T[:3, :3], f"{name} rotation")
    projected = float(np.abs(R.T @ R - np.eye(3)).max()) > ORTHONORMAL_EPS
    if projected or np.any(T[3] != [0.0, 0.0, 0.0, 1.0]):
        T = T.copy()
        T[3] = (0.0, 0.0, 0.0, 1.0)
        if projected:
            T[:3, :3] = project_to_so3(R)
    return T, projected


def check_rigid(T, name: str = "pose", atol: float = 1e-4) -> np.ndarray:
    """``T`` as a float64 4x4 rigid transform, a near-rotation projected onto SO(3) (:func:`to_rigid`).

    Raises:
        ValueError: as :func:`to_rigid`.
    """
    return to_rigid(T, name, atol)[0]


def check_unit_quaternion(q_xyzw, name: str = "quaternion") -> np.ndarray:
    """``q (x, y, z, w)`` as float64, refused as tf2 refuses a TransformStamped's rotation.

    tf2 ignores a transform with NaN or with ``|x^2 + y^2 + z^2 + w^2 - 1| >= QUATERNION_NORM_TOL``
    (``TF_DENORMALIZED_QUATERNION``); within that it keeps the quaternion, and so do we (normalised on use).

    Raises:
        ValueError: NaN / inf, or a squared norm too far from 1 (the message gives it and the tolerance).
    """
    q = np.asarray(q_xyzw, np.float64)
    if q.shape != (4,) or not np.all(np.isfinite(q)):
        msg = f"{name} {q.tolist()} is not 4 finite numbers (x, y, z, w)"
        raise ValueError(msg)
    norm2 = float(q @ q)
    if not abs(norm2 - 1.0) < QUATERNION_NORM_TOL:
        msg = (f"{name} {q.tolist()} is not normalised: x^2 + y^2 + z^2 + w^2 = {norm2:.6g}, tf2 refuses "
               f"|x^2 + y^2 + z^2 + w^2 - 1| >= {QUATERNION_NORM_TOL:g} (TF_DENORMALIZED_QUATERNION)")
        raise ValueError(msg)
    return q


FLIP_X = np.diag([-1.0, 1.0, 1.0, 1.0])


def flip_pose(T):
    """Pose(s) ``[...,4,4]`` after mirroring images horizontally (numpy or torch).

    Mirroring every camera and the world in x keeps transforms rigid: ``T' = F T F``, F = diag(-1, 1, 1, 1).
    """
    F = torch.as_tensor(FLIP_X, dtype=T.dtype, device=T.device) if _is_torch(T) else FLIP_X
    return F @ T @ F


# --------------------------------------------------------------------------------------------------
# Intrinsics
# --------------------------------------------------------------------------------------------------


def _copy(x):
    return x.clone() if _is_torch(x) else np.array(x, dtype=np.float64, copy=True)


def scale_intrinsics(K, sx: float, sy: float):
    """K ``[...,3,3]`` for an image resized by factors (sx, sy) (numpy or torch); pixel centres are kept."""
    K2 = _copy(K)
    K2[..., 0, 0] = K[..., 0, 0] * sx
    K2[..., 0, 1] = K[..., 0, 1] * sx
    K2[..., 1, 1] = K[..., 1, 1] * sy
    K2[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
    K2[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    return K2


def resize_intrinsics(K, src_wh: tuple[int, int], dst_wh: tuple[int, int]):
    """K for an image resized from ``src_wh`` = (W, H) to ``dst_wh`` = (W, H) (numpy or torch)."""
    return scale_intrinsics(K, dst_wh[0] / src_wh[0], dst_wh[1] / src_wh[1])


RESIZED_ASPECT_TOLERANCE = 0.01  # relative: a resized copy keeps its frame's aspect up to the rounding of its size


def is_resized_copy(wh: tuple[int, int], native_wh: tuple[int, int]) -> bool:
    """Whether an image of ``wh`` = (W, H) can be a resized copy of a ``native_wh`` frame: the same aspect ratio within
    :data:`RESIZED_ASPECT_TOLERANCE` (640x480 from ScanNet's 1296x968: 0.4 % off), so that frame's K scales to it
    (:func:`resize_intrinsics`) without stretching it; a crop or another camera does not fit."""
    (W, H), (w0, h0) = wh, native_wh
    return abs(W * h0 - H * w0) <= RESIZED_ASPECT_TOLERANCE * H * w0


def crop_intrinsics(K, x0: float, y0: float):
    """K for the crop whose top-left pixel is (x0, y0) of the original image (numpy or torch)."""
    K2 = _copy(K)
    K2[..., 0, 2] = K[..., 0, 2] - x0
    K2[..., 1, 2] = K[..., 1, 2] - y0
    return K2


def flip_intrinsics(K, width: int):
    """K for an image of ``width`` pixels mirrored horizontally (numpy or torch); pair with :func:`flip_pose`."""
    K2 = _copy(K)
    K2[..., 0, 2] = (width - 1) - K[..., 0, 2]
    K2[..., 0, 1] = -K[..., 0, 1]
    return K2


# Plausible pinhole intrinsics (K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]] for an image of W x H pixels):
# fx, fy between 0.05 and 100 times the larger image side (a field of view from about 169 deg down to 0.6 deg:
# fx = W / (2 tan(fov / 2))), |s| <= fx (a shear of at most 45 deg), and every pixel's ray within MAX_RAY_TAN focal
# lengths of the optical axis (84 deg), wherever the principal point lies: an ROI in a corner of a large sensor has
# its principal point far outside the ROI image (image_geometry takes it: cx = 319.5 - 512 for a 128x96 ROI at
# (512, 384) of a 640x480 sensor; a camera trial found it refused "within one image size"). Anything else is a
# corrupt or mis-scaled camera_info, and back-projecting with it gives inf / NaN points.
FOCAL_RANGE_REL = (0.05, 100.0)
MAX_RAY_TAN = 10.0


def check_intrinsics(K, name: str = "K", size: tuple[int, int] | None = None) -> np.ndarray:
    """Return K as float64 3x3 or raise ValueError naming the field that is wrong.

    Checks the shape, finiteness, positive focal lengths, the last row [0, 0, 1] and the skew bound; with
    ``size`` = (W, H) also the plausibility bounds above (``FOCAL_RANGE_REL``, ``MAX_RAY_TAN``).
    """
    K = _finite_matrix(K, (3, 3), name)
    fx, fy, skew, cx, cy = K[0, 0], K[1, 1], K[0, 1], K[0, 2], K[1, 2]
    if fx <= 0 or fy <= 0:
        msg = f"{name} has non-positive focal length fx={fx}, fy={fy}"
        raise ValueError(msg)
    if not np.allclose(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0:
        msg = f"{name} lower triangle is {[float(K[1, 0]), *K[2].tolist()]}, expected K[1][0] = 0 and last row [0, 0, 1]"
        raise ValueError(msg)
    if abs(skew) > fx:
        msg = f"{name} skew K[0][1] = {skew:g} is implausible; expected |skew| <= fx = {fx:g}"
        raise ValueError(msg)
    if size is not None:
        W, H = (int(v) for v in size)
        lo, hi = (r * max(W, H) for r in FOCAL_RANGE_REL)
        for field, value in (("fx", fx), ("fy", fy)):
            if not lo <= value <= hi:
                msg = (f"{name} {field} = {value:g} is implausible for a {W}x{H} image; expected {lo:g} to {hi:g} "
                       f"({FOCAL_RANGE_REL[0]:g} to {FOCAL_RANGE_REL[1]:g} x the larger image side)")
                raise ValueError(msg)
        for field, value, side, f in (("cx", cx, W, fx), ("cy", cy, H, fy)):
            # the image's edges at -0.5 and side - 0.5 (pixel centres at integers: DESIGN §4)
            lo, hi = side - 0.5 - MAX_RAY_TAN * f, MAX_RAY_TAN * f - 0.5
            if not lo <= value <= hi:
                msg = (f"{name} {field} = {value:g} is implausible for a {W}x{H} image with focal length {f:g}; "
                       f"expected {lo:g} to {hi:g} (every pixel's ray within {MAX_RAY_TAN:g} focal lengths of the "
                       "optical axis: 84 deg)")
                raise ValueError(msg)
    return K


# --------------------------------------------------------------------------------------------------
# Projection
# --------------------------------------------------------------------------------------------------


def pixel_grid(H: int, W: int, like=None):
    """Pixel centres ``[H,W,2]`` as (u, v); numpy float64, or a torch tensor matching ``like``."""
    if like is not None and _is_torch(like):
        v, u = torch.meshgrid(
            torch.arange(H, dtype=like.dtype, device=like.device),
            torch.arange(W, dtype=like.dtype, device=like.device),
            indexing="ij",
        )
        return torch.stack([u, v], dim=-1)
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    return np.stack([u, v], axis=-1)


def backproject(depth, K):
    """Depth ``[...,H,W]`` (metres) and K ``[...,3,3]`` -> camera-frame points ``[...,H,W,3]`` (numpy or torch).

    Invalid depth (NaN) gives NaN points.
    """
    H, W = depth.shape[-2:]
    uv = pixel_grid(H, W, like=depth)
    if _is_torch(depth):
        ones = torch.ones_like(uv[..., :1])
        pix = torch.cat([uv, ones], dim=-1)  # [H,W,3]
        Kinv = torch.linalg.inv(K.to(depth.dtype))
        pix = pix.expand(*K.shape[:-2], H, W, 3)
    else:
        pix = np.concatenate([uv, np.ones_like(uv[..., :1])], axis=-1)
        Kinv = np.linalg.inv(np.asarray(K, dtype=np.float64))
        pix = np.broadcast_to(pix, (*Kinv.shape[:-2], H, W, 3))
    rays = _apply_linear(Kinv, pix)  # [...,H,W,3], z = 1
    return rays * depth[..., None]


def project(points, K):
    """Camera-frame points ``[..., 3]`` -> (pixel coordinates ``[..., 2]``, z ``[...]``) (numpy or torch).

    Points with z <= MIN_Z get non-finite pixel coordinates; callers mask on z.
    """
    p = _apply_linear(K, points)
    z = p[..., 2]
    if _is_torch(points):
        safe = torch.where(z > MIN_Z, z, torch.full_like(z, float("nan")))
    else:
        with np.errstate(invalid="ignore"):
            safe = np.where(z > MIN_Z, z, np.nan)
    return p[..., :2] / safe[..., None], z


# how far (pixels, at the depth's size) a depth camera's K may lie from the colour K scaled to that size and still
# be the same view: rounding conventions of a resize move the principal point by under a pixel
REGISTERED_K_TOLERANCE_PX = 1.0


def is_registered(depth_frame_id: str, image_frame_id: str, K_depth: np.ndarray | None = None,
                  depth_wh: tuple[int, int] | None = None, K_image: np.ndarray | None = None,
                  image_wh: tuple[int, int] | None = None) -> bool:
    """Whether a depth image is registered to a colour image: it carries the image's ``frame_id``, or none (as
    RealSense ``aligned_depth_to_color`` topics and depth_image_proc's ``register`` output are), and, when the depth's
    own CameraInfo is known (``K_depth`` for ``depth_wh``), its K is the colour K (``K_image`` for ``image_wh``)
    scaled to the depth's size within ``REGISTERED_K_TOLERANCE_PX``: a depth image of the same frame but cropped or
    of another field of view (a trial: a centre crop with its own K was stretched over the colour image, 0.119
    against the right 0.092) is a view of its own. Otherwise it must be reprojected with its CameraInfo and TF
    (:func:`reproject_depth`; the identity transform for the same frame), as depth_image_proc's ``register`` does."""
    if depth_frame_id not in ("", image_frame_id):
        return False
    if K_depth is None or K_image is None or not depth_wh or not image_wh or 0 in (*depth_wh, *image_wh):
        return True
    scaled = resize_intrinsics(np.asarray(K_image, np.float64), tuple(image_wh), tuple(depth_wh))
    return bool(np.allclose(np.asarray(K_depth, np.float64), scaled, rtol=0.0, atol=REGISTERED_K_TOLERANCE_PX))


def reproject_depth(depth_src, K_src, T_dst_src, K_dst, dst_hw: tuple[int, int]) -> np.ndarray:
    """A source depth map ``[h,w]`` (metres, NaN / 0 invalid) seen from another camera (numpy).

    Cameras that share their optical centre (``T_dst_src`` a rotation, as one device's colour and depth views in one
    frame, or ScanNet's two calibrations): every destination pixel looks up the source pixel its ray meets
    (nearest, no depth invented across edges), so the result is as dense as the source allows. Otherwise each valid
    source pixel is splatted over its footprint, the destination pixels whose centres lie in the box of its four
    corners (:data:`FOOTPRINT_HALF_PX` from its centre) projected at its depth, and the nearest surface wins
    (z-buffer): depth_image_proc's ``register`` with ``fill_upsampling_holes`` (image_pipeline), there with two
    corners. One destination pixel per source pixel left
    3 in 4 pixels empty for a coarser depth camera (640x480 into 1280x720: a review) and 2-4 % holes under a
    rotation at equal resolution, where neighbouring pixels land 1.03 pixels apart (session 26's note).

    Args:
        depth_src: ``[h,w]`` z-depth in the source camera.
        K_src, K_dst: ``[3,3]`` intrinsics of the source depth and the destination image.
        T_dst_src: ``[4,4]`` source camera -> destination camera.
        dst_hw: (H, W) of the destination.

    Returns:
        the destination z-depth ``[H,W]`` float32 in metres, NaN where no source pixel lands.
    """
    H, W = dst_hw
    depth_src = np.asarray(depth_src, np.float64)
    K_src, K_dst, T = (np.asarray(a, np.float64) for a in (K_src, K_dst, T_dst_src))
    h, w = depth_src.shape
    if np.abs(T[:3, 3]).max() < 1e-6:  # a rotation about the optical centre (within a micrometre): a homography, looked up per pixel
        Hm = K_src @ T[:3, :3].T @ np.linalg.inv(K_dst)  # destination pixel -> source pixel (x z_ray)
        vs, us = np.arange(H, dtype=np.float64)[:, None], np.arange(W, dtype=np.float64)[None, :]
        z_ray = Hm[2, 0] * us + Hm[2, 1] * vs + Hm[2, 2]  # the ray's source z where its destination z is 1
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.rint((Hm[0, 0] * us + Hm[0, 1] * vs + Hm[0, 2]) / z_ray)
            v = np.rint((Hm[1, 0] * us + Hm[1, 1] * vs + Hm[1, 2]) / z_ray)
            ok = (z_ray > MIN_Z) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        z_src = np.where(ok, depth_src[np.where(ok, v, 0).astype(np.int64), np.where(ok, u, 0).astype(np.int64)],
                         np.nan)
        with np.errstate(invalid="ignore"):
            return np.where(z_src > 0, z_src / z_ray, np.nan).astype(np.float32)
    with np.errstate(invalid="ignore"):
        vs, us = np.nonzero(np.isfinite(depth_src) & (depth_src > 0))
    z_s = depth_src[vs, us]
    # destination homogeneous pixel of source pixel (u, v) at depth z: z M [u, v, 1] + b, linear in u and v
    M, b = K_dst @ T[:3, :3] @ np.linalg.inv(K_src), K_dst @ T[:3, 3]
    base = [z_s * (M[i, 0] * us + M[i, 1] * vs + M[i, 2]) + b[i] for i in range(3)]  # the pixel centre
    h = FOOTPRINT_HALF_PX
    step_u, step_v = [z_s * (h * M[i, 0]) for i in range(3)], [z_s * (h * M[i, 1]) for i in range(3)]
    z = base[2]
    cu, cv_, cz = [], [], []  # the four pixel corners at the pixel's depth, in the destination image
    for su, sv in ((-1, -1), (1, -1), (-1, 1), (1, 1)):
        p = [base[i] + su * step_u[i] + sv * step_v[i] for i in range(3)]
        cz.append(p[2])
        with np.errstate(divide="ignore", invalid="ignore"):
            cu.append(p[0] / p[2])
            cv_.append(p[1] / p[2])
    ok = (z > MIN_Z) & (cz[0] > MIN_Z) & (cz[1] > MIN_Z) & (cz[2] > MIN_Z) & (cz[3] > MIN_Z)
    cu, cv_, z = [c[ok] for c in cu], [c[ok] for c in cv_], z[ok]
    lo_u = np.minimum(np.minimum(cu[0], cu[1]), np.minimum(cu[2], cu[3]))
    hi_u = np.maximum(np.maximum(cu[0], cu[1]), np.maximum(cu[2], cu[3]))
    lo_v = np.minimum(np.minimum(cv_[0], cv_[1]), np.minimum(cv_[2], cv_[3]))
    hi_v = np.maximum(np.maximum(cv_[0], cv_[1]), np.maximum(cv_[2], cv_[3]))
    centre_u, centre_v = np.rint(0.5 * (lo_u + hi_u)), np.rint(0.5 * (lo_v + hi_v))
    half = MAX_FOOTPRINT_PX // 2  # a box is clipped to MAX_FOOTPRINT_PX around its centre
    u0, u1 = np.maximum(np.ceil(lo_u), centre_u - half), np.minimum(np.floor(hi_u), centre_u + half - 1)
    v0, v1 = np.maximum(np.ceil(lo_v), centre_v - half), np.minimum(np.floor(hi_v), centre_v + half - 1)
    # a footprint between pixel centres still lands on its nearest pixel
    u0, u1 = np.where(u0 > u1, centre_u, u0), np.where(u0 > u1, centre_u, u1)
    v0, v1 = np.where(v0 > v1, centre_v, v0), np.where(v0 > v1, centre_v, v1)
    keep = (u1 >= 0) & (u0 < W) & (v1 >= 0) & (v0 < H)
    u0, u1, v0, v1, z = (a[keep] for a in (u0, u1, v0, v1, z))
    u0, v0 = np.maximum(u0, 0).astype(np.int64), np.maximum(v0, 0).astype(np.int64)
    u1, v1 = np.minimum(u1, W - 1).astype(np.int64), np.minimum(v1, H - 1).astype(np.int64)
    zbuf = np.full(H * W, np.inf)
    for dv in range(int((v1 - v0).max(initial=-1)) + 1):
        for du in range(int((u1 - u0).max(initial=-1)) + 1):
            m = (v0 + dv <= v1) & (u0 + du <= u1)
            np.minimum.at(zbuf, (v0[m] + dv) * W + u0[m] + du, z[m])
    zbuf[~np.isfinite(zbuf)] = np.nan
    return zbuf.reshape(H, W).astype(np.float32)


def _grid(uv: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Pixel coordinates ``[B,H,W,2]`` in an image of ``hw`` -> grid_sample's [-1, 1] grid (align_corners=True)."""
    H, W = hw
    scale = uv.new_tensor([2.0 / max(W - 1, 1), 2.0 / max(H - 1, 1)])
    grid = uv * scale - 1.0
    # Non-finite coordinates (points behind the camera, invalid depth) are sent outside; they sample zeros.
    return torch.where(torch.isfinite(grid), grid, torch.full_like(grid, -3.0))


def backward_warp(maps_src: torch.Tensor, depth_ref: torch.Tensor, K_ref: torch.Tensor, K_src: torch.Tensor,
                  T_src_ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample source-view maps where each reference pixel lands: the one warp of the cross-view loss, the
    photometric term and the cross-view metric (:func:`depth_in_other_view`).

    Every reference pixel is lifted with ``depth_ref``, moved into the source camera with ``T_src_ref`` and
    projected with ``K_src``; ``maps_src`` is sampled there bilinearly (``grid_sample``, pixel centres, zeros
    outside). Differentiable with respect to ``maps_src`` and ``depth_ref`` (points behind the source camera
    are masked before the division, so they give no NaN gradient). Torch only.

    Args:
        maps_src: ``[B,C,H_src,W_src]`` maps of the source view.
        depth_ref: ``[B,1,H,W]`` z-depth of the reference view, metres (NaN invalid).
        K_ref: ``[B,3,3]`` at (H, W); K_src: ``[B,3,3]`` at (H_src, W_src).
        T_src_ref: ``[B,4,4]``, reference-camera points -> source camera.

    Returns:
        ``(sampled [B,C,H,W], z_src [B,1,H,W])``: the maps at each pixel's projection, and the point's z in the
        source camera (NaN where the depth is invalid; <= ``MIN_Z`` behind the camera, sampled as zeros).
    """
    pts_src = transform_points(T_src_ref, backproject(depth_ref[:, 0], K_ref))  # [B,H,W,3]
    z = pts_src[..., 2:3]
    front = z > MIN_Z
    uv, _ = project(torch.where(front, pts_src, torch.ones_like(pts_src)), K_src)
    uv = torch.where(front, uv, torch.full_like(uv, float("nan")))
    grid = _grid(uv, maps_src.shape[-2:])
    sampled = F.grid_sample(maps_src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return sampled, z.permute(0, 3, 1, 2)


def depth_in_other_view(depth_a, K_a, T_b_a, depth_b, K_b, max_rel_jump: float = EDGE_REL_JUMP):
    """For each pixel of view a: its z in camera b, and b's depth where it lands (numpy or torch).

    Through :func:`backward_warp` (b's depth sampled bilinearly at each pixel's projection), the warp of the
    cross-view loss. Visible surfaces give ``z_pred == z_b``; occluded ones ``z_pred > z_b``.

    Args:
        depth_a: ``[...,H,W]`` z-depth of view a, metres (NaN or <= 0 invalid).
        K_a: ``[...,3,3]`` at (H, W) (or one ``[3,3]`` for the batch); likewise ``K_b`` for ``depth_b``.
        T_b_a: ``[...,4,4]`` (or ``[4,4]``), view-a camera points -> camera b (``relative_pose(T_world_b, T_world_a)``).
        depth_b: ``[...,H_b,W_b]`` z-depth of view b, metres.
        max_rel_jump: the taps of a sample straddle a depth edge of b when their bilinear-weighted standard
            deviation exceeds ``max_rel_jump / 2`` of their mean (two taps of equal weight: they differ by more
            than ``max_rel_jump`` relative); interpolating across the edge would invent a surface.

    Returns:
        ``(z_pred, z_b)``, both ``[...,H,W]`` (numpy: float64; torch: ``depth_a``'s dtype), NaN where the pixel has
        no depth, falls behind camera b, has a bilinear tap of positive weight outside b's image or on invalid
        depth, or lands on a depth edge of b.
    """
    numpy = not _is_torch(depth_a)
    if numpy:
        depth_a, K_a, T_b_a, depth_b, K_b = (torch.as_tensor(np.asarray(x, np.float64))
                                             for x in (depth_a, K_a, T_b_a, depth_b, K_b))
    lead, (H, W) = depth_a.shape[:-2], depth_a.shape[-2:]
    dtype = depth_a.dtype

    def batch(x, tail):
        return x.to(dtype).expand(*lead, *tail).reshape(-1, *tail)

    d_b = batch(depth_b, depth_b.shape[-2:])
    valid = torch.isfinite(d_b) & (d_b > 0)
    d_b = torch.where(valid, d_b, torch.zeros_like(d_b))
    maps = torch.stack([d_b, d_b * d_b, valid.to(dtype)], dim=1)  # [B,3,H_b,W_b]
    d_a = depth_a.reshape(-1, 1, H, W)
    d_a = torch.where(d_a > 0, d_a, torch.full_like(d_a, float("nan")))
    sampled, z = backward_warp(maps, d_a, batch(K_a, (3, 3)), batch(K_b, (3, 3)), batch(T_b_a, (4, 4)))
    weighted, weighted_sq, weight_valid = sampled.unbind(1)
    # all taps of positive weight inside b and valid there (their weights sum to 1; a tap just outside may hold a
    # weight of rounding size, so the moments are normalised by the valid weight), and on one surface
    ok = weight_valid > 1 - 1e-6
    mean = weighted / weight_valid.clamp_min(1e-6)
    spread = (weighted_sq / weight_valid.clamp_min(1e-6) - mean * mean).clamp_min(0).sqrt()
    ok &= 2 * spread <= max_rel_jump * mean
    nan = torch.full_like(mean, float("nan"))
    z_pred = torch.where(ok, z[:, 0], nan).reshape(*lead, H, W)
    z_b = torch.where(ok, mean, nan).reshape(*lead, H, W)
    return (z_pred.numpy(), z_b.numpy()) if numpy else (z_pred, z_b)


# --------------------------------------------------------------------------------------------------
# Depth encodings
# --------------------------------------------------------------------------------------------------


def depth_from_mm(depth_mm) -> np.ndarray:
    """uint16 millimetres (0 invalid) -> float32 metres (NaN invalid)."""
    d = np.asarray(depth_mm)
    out = d.astype(np.float32) / np.float32(MM_PER_M)
    out[d == 0] = np.nan
    return out


def depth_to_mm(depth_m) -> np.ndarray:
    """float metres (NaN or <= 0 invalid) -> uint16 millimetres (0 invalid; beyond 65.535 m is invalid)."""
    d = np.asarray(depth_m, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        mm = np.rint(d * MM_PER_M)
        ok = np.isfinite(mm) & (mm > 0) & (mm <= np.iinfo(np.uint16).max)
    return np.where(ok, mm, 0).astype(np.uint16)


def valid_depth(depth):
    """Validity mask of a depth map (numpy or torch): finite and > 0 for float, != 0 for integer millimetres."""
    if _is_torch(depth):
        return torch.isfinite(depth) & (depth > 0)
    d = np.asarray(depth)
    if np.issubdtype(d.dtype, np.integer):
        return d != 0
    with np.errstate(invalid="ignore"):
        return np.isfinite(d) & (d > 0)


def depth_candidates(depth_min: float, depth_max: float, num: int, like=None):
    """``num`` depths uniform in inverse depth from ``depth_min`` to ``depth_max`` (ascending), metres.

    numpy float64, or a torch tensor with ``like``'s dtype and device.
    """
    if not 0 < depth_min < depth_max:
        msg = f"depth range [{depth_min}, {depth_max}] must satisfy 0 < depth_min < depth_max"
        raise ValueError(msg)
    if num < 1:
        msg = f"number of depth candidates must be >= 1, got {num}"
        raise ValueError(msg)
    if like is not None and _is_torch(like):
        inv = torch.linspace(1.0 / depth_min, 1.0 / depth_max, num, dtype=torch.float64)
        return (1.0 / inv).to(dtype=like.dtype, device=like.device)
    return 1.0 / np.linspace(1.0 / depth_min, 1.0 / depth_max, num)


# --------------------------------------------------------------------------------------------------
# Normals
# --------------------------------------------------------------------------------------------------


def unit_vectors(x: torch.Tensor, dim: int = 1, eps: float = 1e-12) -> torch.Tensor:
    """``x / max(|x|, eps)`` along ``dim``: ``torch.nn.functional.normalize``'s value (to float rounding).

    Written as a sum of squares because ``F.normalize``'s ``linalg.vector_norm`` over a channel dim that is not
    the innermost one ran ~10x slower on one CPU thread (3-4 ms for [1, 3, 120, 160]); the clamp comes before
    the square root, so a zero vector has a zero gradient, not NaN.
    """
    return x / (x * x).sum(dim, keepdim=True).clamp_min(eps * eps).sqrt()


def _one_sided(P_minus, P, P_plus, z_minus, z, z_plus):
    """Pick the forward or backward difference along one axis, whichever stays on the surface."""
    j_fwd = torch.nan_to_num((z_plus - z).abs(), nan=float("inf"))
    j_bwd = torch.nan_to_num((z - z_minus).abs(), nan=float("inf"))
    use_fwd = j_fwd <= j_bwd
    d = torch.where(use_fwd[..., None], P_plus - P, P - P_minus)
    jump = torch.minimum(j_fwd, j_bwd)
    return d, jump <= EDGE_REL_JUMP * z  # NaN z compares False: invalid


def normals_from_depth(depth, K) -> np.ndarray:
    """Surface normals ``[H,W,3]`` float32 from a depth map ``[H,W]`` (metres) and K (numpy), by raw differences.

    For exact depth (rendered scenes); a measured depth map (millimetre steps, upsampled sensors) needs
    :func:`reference_normals`, which smooths it first.

    Tangents use the one-sided difference that stays on the surface, so depth edges do not bend normals;
    pixels with no on-surface neighbour in x or y are NaN. Normals point towards the camera.
    """
    d = torch.as_tensor(np.asarray(depth, np.float64))[None, None]
    Kt = torch.as_tensor(np.asarray(K, np.float64))[None]
    n, valid = normals_from_depth_torch(d, Kt)
    n = n[0].permute(1, 2, 0).numpy()
    n[~valid[0, 0].numpy()] = np.nan
    return n.astype(np.float32)


# Gaussian sigma (pixels) of the smoothing before the reference normals of a depth label (:func:`reference_normals`).
# A floor in millimetres upsampled 2x by repetition (test_geometry): 95 % of normals within 7.5 / 3.5 / 2.3 deg at
# 1.0 / 1.5 / 2.0 px; 1.5 costs ~0.2 s a 540x360 frame on one CPU thread, 2.0 nearly twice that.
REFERENCE_NORMALS_SIGMA_PX = 1.5


def smooth_depth(depth: torch.Tensor, sigma_px: float = REFERENCE_NORMALS_SIGMA_PX) -> torch.Tensor:
    """Edge-aware smoothing of ``depth`` [N,1,H,W] (metres, NaN/<= 0 invalid) -> [N,1,H,W] float64 metres.

    At each valid pixel, a plane in inverse depth, ``1/z = a + b x + c y`` (exact for any planar surface: 1/z is
    linear in the pixel coordinates), fitted by weighted least squares over a (2r+1)^2 window (r = round(3 sigma)),
    each neighbour weighted by a Gaussian of ``sigma_px`` and counted only if valid and within ``EDGE_REL_JUMP`` of the
    pixel's depth per pixel of distance (Chebyshev): a cross-bilateral local-linear filter. A sensor's millimetre
    steps, its noise and the stairs of a depth map upsampled by repetition (a slanted floor whose depth changes 3 % a
    pixel jumps 6 % every second pixel) are averaged out; depth edges stay edges; slanted surfaces keep their slope,
    also at the image border, where a plain weighted mean would bend them. NaN where the input is invalid or the
    pixel's same-surface neighbours hold under 30 % of the window's weight (isolated pixels). Raises ValueError for
    ``sigma_px`` not finite and > 0.
    """
    if not 0 < sigma_px < float("inf"):
        msg = f"sigma_px must be finite and > 0, got {sigma_px}"
        raise ValueError(msg)
    ok = valid_depth(depth)
    d = torch.where(ok, depth, torch.ones_like(depth)).double()
    q = 1.0 / d
    r = max(1, int(round(3 * sigma_px)))
    x = torch.arange(-r, r + 1, dtype=torch.float64, device=depth.device)
    g = torch.exp(-0.5 * (x / sigma_px) ** 2)
    g = g / g.sum()
    H, W = d.shape[-2:]
    d_pad, q_pad, ok_pad = F.pad(d, (r, r, r, r)), F.pad(q, (r, r, r, r)), F.pad(ok, (r, r, r, r))
    # the normal equations' sums over the window: w, w x, w y, w x^2, w x y, w y^2 and w q, w q x, w q y
    s1, sx, sy, sxx, sxy, syy, sq, sqx, sqy = (torch.zeros_like(d) for _ in range(9))
    for dy in range(2 * r + 1):  # one shifted view at a time: memory stays O(H W) at any window size
        for dx in range(2 * r + 1):
            win = (..., slice(dy, dy + H), slice(dx, dx + W))
            u, v = dx - r, dy - r
            reach = max(1, abs(u), abs(v))  # pixels away: a slanted surface changes more over more pixels
            w = (g[dy] * g[dx]) * (ok_pad[win] & ((d_pad[win] - d).abs() <= EDGE_REL_JUMP * reach * d))
            wq = w * q_pad[win]
            s1 += w
            sx += u * w
            sy += v * w
            sxx += (u * u) * w
            sxy += (u * v) * w
            syy += (v * v) * w
            sq += wq
            sqx += u * wq
            sqy += v * wq
    # the plane's value at the pixel (x = y = 0) by Cramer's rule; a small ridge on the slopes keeps a neighbourhood
    # on one line (a thin structure) solvable: it is fitted as a line along it
    sxx, syy = sxx + 1e-6, syy + 1e-6
    c_xx = sxx * syy - sxy * sxy
    det = s1 * c_xx - sx * (sx * syy - sxy * sy) + sy * (sx * sxy - sxx * sy)
    num = sq * c_xx - sx * (sqx * syy - sxy * sqy) + sy * (sqx * sxy - sxx * sqy)
    inv = num / torch.where(det.abs() > 1e-18, det, torch.full_like(det, 1e-18))
    good = ok & (s1 > 0.3) & (inv > 0)
    return torch.where(good, 1.0 / inv.clamp_min(1e-12), torch.full_like(d, float("nan")))


def smoothed_depth_normals(depth: torch.Tensor, K: torch.Tensor,
                           sigma_px: float = REFERENCE_NORMALS_SIGMA_PX) -> torch.Tensor:
    """Normals ``[N,3,H,W]`` (NaN invalid) of ``depth`` [N,1,H,W] (metres) after :func:`smooth_depth`; ``K`` [N,3,3].

    The reference normals of a measured depth map. Raw one-sided differences (:func:`normals_from_depth_torch`) of
    a depth stored in whole millimetres, or upsampled by pixel repetition, see equal neighbours and return normals
    facing the camera: on the HoloLens frames 99 % within 5 deg of the optical axis, 1-4 % after this smoothing.
    """
    normals, valid = normals_from_depth_torch(smooth_depth(depth, sigma_px).float(), K.float())
    return torch.where(valid, normals, torch.full_like(normals, float("nan")))


def reference_normals(depth, K, sigma_px: float = REFERENCE_NORMALS_SIGMA_PX) -> np.ndarray:
    """Ground-truth normals ``[H,W,3]`` float32 (NaN invalid) of a depth label ``[H,W]`` (metres, numpy) with ``K``:
    :func:`smoothed_depth_normals`. The one rule for the normals a dataset or a bag does not store (training labels,
    ``mtl3d eval``, replay's report and montages)."""
    d = torch.as_tensor(np.asarray(depth, np.float64))[None, None]
    n = smoothed_depth_normals(d, torch.as_tensor(np.asarray(K, np.float64))[None], sigma_px)
    return n[0].permute(1, 2, 0).numpy().astype(np.float32)


def unit_rays(K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Unit viewing rays ``[H,W,3]`` (camera optical frame) of the pixel centres of an ``height x width`` image with
    intrinsics ``K`` ``[3,3]`` (dtype and device of ``K``)."""
    return unit_vectors(backproject(torch.ones((height, width), dtype=K.dtype, device=K.device), K), -1)


def normals_towards_camera(normals: torch.Tensor, rays: torch.Tensor) -> torch.Tensor:
    """Unit normals ``[H,W,3]`` (camera optical frame) made to face the camera (``n . ray <= 0``), the convention of
    :func:`normals_from_depth` and PCL's ``flipNormalTowardsViewpoint``.

    A predicted normal can point a few degrees away from the camera at a grazing surface (an output trial: up to 5.5
    degrees past perpendicular at depth edges); it loses its component along the pixel's ray, i.e. becomes the nearest
    direction at most perpendicular to it. One pointing more than 45 degrees past perpendicular is a reversed normal
    and is flipped. Normals that face the camera, and NaN ones, are returned unchanged.

    Args:
        normals: ``[H,W,3]`` float, unit length (NaN allowed).
        rays: ``[H,W,3]`` the pixels' unit rays (:func:`unit_rays`; the runtime keeps them per camera and size).
    """
    rays = rays.to(normals)
    along = (normals * rays).sum(-1)
    away = along > 0
    if not bool(away.any()):  # the usual frame: nothing to turn
        return normals
    n, r, a = normals[away], rays[away], along[away][:, None]  # only the few that point away
    projected = n - a * r
    norm = torch.linalg.norm(projected, dim=-1, keepdim=True)
    out = normals.clone()
    out[away] = torch.where(norm >= np.sqrt(0.5), projected / norm.clamp_min(1e-12), -n)
    return out


def normals_from_depth_torch(depth: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normals from depth in torch: depth ``[B,1,H,W]`` metres, K ``[B,3,3]``.

    Returns ``(normals [B,3,H,W], valid [B,1,H,W])``; invalid normals are zero.
    """
    z = torch.where(valid_depth(depth), depth, torch.full_like(depth, float("nan")))[:, 0]  # [B,H,W]
    P = backproject(z, K)  # [B,H,W,3]
    nan = float("nan")
    Pp = torch.nn.functional.pad(P.permute(0, 3, 1, 2), (1, 1, 1, 1), value=nan).permute(0, 2, 3, 1)
    zp = torch.nn.functional.pad(z, (1, 1, 1, 1), value=nan)
    du, ok_u = _one_sided(Pp[:, 1:-1, :-2], P, Pp[:, 1:-1, 2:], zp[:, 1:-1, :-2], z, zp[:, 1:-1, 2:])
    dv, ok_v = _one_sided(Pp[:, :-2, 1:-1], P, Pp[:, 2:, 1:-1], zp[:, :-2, 1:-1], z, zp[:, 2:, 1:-1])
    n = torch.cross(dv, du, dim=-1)  # x right, y down, z forward: dv x du faces the camera on a plane
    norm = torch.linalg.norm(n, dim=-1, keepdim=True)
    valid = ok_u & ok_v & torch.isfinite(norm[..., 0]) & (norm[..., 0] > 0)
    n = n / norm.clamp_min(1e-12)
    # orient towards the camera: n . P < 0
    flip = (n * P).sum(-1, keepdim=True) > 0
    n = torch.where(flip, -n, n)
    n = torch.where(valid[..., None], n, torch.zeros_like(n))
    return n.permute(0, 3, 1, 2).contiguous(), valid[:, None]


# --------------------------------------------------------------------------------------------------
# Point clouds
# --------------------------------------------------------------------------------------------------


@dataclass
class PointCloud:
    """Valid points of a depth image: ``points [N,3]`` float32 metres in the requested frame,
    ``rgb [N,3]`` uint8, ``labels [N]`` uint16, ``pixels [N,2]`` (u, v) of each point in the image."""

    points: np.ndarray
    rgb: np.ndarray | None
    labels: np.ndarray | None
    pixels: np.ndarray


def point_cloud(depth, K, rgb=None, labels=None, stride: int = 1, T_frame_cam=None) -> PointCloud:
    """Back-project every ``stride``-th pixel with valid depth into a point cloud (numpy).

    ``depth [H,W]`` metres; ``rgb [H,W,3]`` uint8 and ``labels [H,W]`` sampled at the same pixels;
    ``T_frame_cam`` moves the points out of the camera frame (e.g. into the world frame). Points that are not
    finite in float32 (absurd intrinsics or poses overflow) are left out: a cloud never carries inf or NaN.
    """
    if stride < 1:
        msg = f"point stride must be >= 1, got {stride}"
        raise ValueError(msg)
    depth = np.asarray(depth)
    H, W = depth.shape
    Ks = np.asarray(K, np.float64)
    d = depth[::stride, ::stride]
    pts = backproject(d.astype(np.float64), subsample_intrinsics(Ks, stride))
    vs, us = np.mgrid[0:H:stride, 0:W:stride]
    ok = valid_depth(d)
    if T_frame_cam is not None:
        pts = transform_points(np.asarray(T_frame_cam, np.float64), pts)
    with np.errstate(over="ignore", invalid="ignore"):
        pts32 = pts.astype(np.float32)
    ok &= np.isfinite(pts32).all(axis=-1)
    pix = np.stack([us[ok], vs[ok]], axis=-1)
    return PointCloud(
        points=pts32[ok],
        rgb=None if rgb is None else np.asarray(rgb)[::stride, ::stride][ok].astype(np.uint8),
        labels=None if labels is None else np.asarray(labels)[::stride, ::stride][ok].astype(np.uint16),
        pixels=pix,
    )


def subsample_intrinsics(K, stride: int):
    """K of the image made by taking every ``stride``-th pixel (pixel i of it is pixel i*stride of the original)."""
    K2 = _copy(K)
    K2[..., 0, :] = K[..., 0, :] / stride
    K2[..., 1, :] = K[..., 1, :] / stride
    return K2
