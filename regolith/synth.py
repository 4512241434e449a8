"""Small procedural stand-ins for the three rendered lunar-rover camera datasets.

The study trains SegFormer on two rendered sets, one domain randomized
(train_dr) and one with a single fixed appearance (train_nodr), and tests on
an unseen photoreal set (test_photoreal). Those renders are large and live
outside the repository, so this module draws look-alikes with the same
directory layout and label set for the unit tests and the CPU demo. They
exist to exercise the pipeline end to end; they are not a substitute for the
rendered datasets, and no number measured on them says anything about the
real domain gap.

    python -m regolith.synth OUT [--size 128] [--seed 0] \\
        [--dr-frames 160] [--nodr-frames 80] [--test-frames 32] [--photos 0]

writes, for each split,

    OUT/<split>/rgb/rgb_NNNNN.png    8-bit RGB
    OUT/<split>/mask/mask_NNNNN.png  8-bit labels: 0 regolith, 1 rock, 2 sky,
                                     255 ignore (the 1-pixel horizon band)

and prints the frame count and rock pixel share of each split. The default
counts keep the real study's 1500/750/300 proportion, scaled down.

With --photos N it also writes OUT/photos/photo_NNN.jpg: N rock-free frames in a
photographic style (JPEG, sizes and aspect ratios other than the splits', some
grayscale, no masks) for regolith.photos, the sim-to-real check; any rock a model
finds there is a false hazard. They draw from a random stream of their own, so
the splits are the same with or without them.

Each frame is a pinhole view over gently undulating ground: a near-black sky,
regolith with perspective value-noise texture and relief shaded by the
lunar-Lambert law, and rocks as shaded blobs casting shadows away from the
sun, longer as the sun sinks. Frame i of a split depends only on (seed,
split, i), so it is the same however many frames are written.
"""

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image

from regolith import CLASSES, IGNORE_INDEX as IGNORE, ROCK

REGOLITH, SKY = CLASSES.index("regolith"), CLASSES.index("sky")
SPLITS = ("train_dr", "train_nodr", "test_photoreal")

# Fixed per-split stream ids: frames of different splits never share random
# numbers, and adding a split later cannot shift the existing ones.
SPLIT_STREAMS = {"train_dr": 1, "train_nodr": 2, "test_photoreal": 3}

# Photographic-style frames for regolith.photos: (width, height, PIL mode of the JPEG). Sizes,
# aspect ratios and grayscale unlike the square RGB training frames, as real photographs are.
PHOTO_SHAPES = ((320, 240, "RGB"), (200, 300, "L"), (400, 160, "RGB"),
                (360, 270, "RGB"), (240, 320, "L"), (480, 200, "RGB"))
PHOTO_STREAM = 4  # a stream id of its own beside SPLIT_STREAMS: photos never shift a split's frames
PHOTO_QUALITY = 90

# Camera at unit height over the ground plane with focal length equal to the
# image width in pixels (about 53 degrees field of view). A ground point at
# distance Z then lies F/Z rows below the horizon, which sets texture scale,
# rock size and shadow foreshortening from one relation.
CAMERA_HEIGHT = 1.0

# Weight of the Lommel-Seeliger term in McEwen's lunar-Lambert law; around
# 0.5-1 for the lunar surface at moderate phase angles. It is what keeps the
# far, grazing-view regolith from going black the way pure Lambert would.
LUNAR_LAMBERT_WEIGHT = 0.6
# Light that reaches shadows: no atmosphere, so only bounce from lit ground.
AMBIENT = 0.05
EXPOSURE = 0.55
LATTICE_SIZE = 64  # power of two, so the texture can wrap with a bit mask

# Rock populations. Rock radius is in units of camera height; rows are drawn
# as u**bias of the ground span, so bias > 1 crowds rocks towards the horizon
# where they are small, as a uniform scatter on the ground plane would.
ROCK_FIELDS = {
    "train": dict(count=(3, 13), radius_median=0.11, radius_sigma=0.6,
                  radius_range=(0.03, 0.45), row_bias=1.6),
    "test": dict(count=(1, 4), radius_median=0.26, radius_sigma=0.35,
                 radius_range=(0.12, 0.6), row_bias=0.8),
}


def frame_streams(seed, kind, index):
    """Independent generators for a frame's layout, appearance and pixel noise.

    Keeping them apart is what lets train_nodr fix the appearance while its
    layouts are drawn exactly as train_dr's are.
    """
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if kind not in SPLIT_STREAMS:
        raise ValueError(f"split kind {kind!r} is not one of {SPLITS}")
    sequence = np.random.SeedSequence([seed, SPLIT_STREAMS[kind], index])
    return [np.random.default_rng(child) for child in sequence.spawn(3)]


# The randomized splits' appearance: each parameter a (low, high) range drawn uniformly, a fixed
# value, or for the tint a base colour and a spread around it. Drawn in this order, after the sun's
# azimuth: the order fixes which random numbers go where, so frame i stays the same frame.
APPEARANCE = {
    "test_photoreal": dict(sun_elevation=(42.0, 70.0), albedo=(0.55, 0.75), rock_albedo_ratio=(1.3, 1.7),
                           texture_frequency=(1.0, 2.0), texture_contrast=(0.15, 0.3), relief=(0.15, 0.3),
                           tint=([1.0, 0.99, 0.97], 0.01), sky_level=0.008, sensor_noise=0.005),
    "train_dr": dict(sun_elevation=(5.0, 40.0), albedo=(0.25, 0.6), rock_albedo_ratio=(0.9, 1.6),
                     texture_frequency=(0.6, 3.0), texture_contrast=(0.1, 0.5), relief=(0.1, 0.6),
                     tint=([1.0, 1.0, 1.0], 0.08), sky_level=(0.0, 0.04), sensor_noise=(0.003, 0.04)),
}


def draw_appearance(kind, rng):
    """Sun, regolith material, tint and sensor noise for one frame."""
    if kind == "train_nodr":
        return dict(sun_elevation=20.0, sun_azimuth=-35.0, albedo=0.45,
                    rock_albedo_ratio=1.25, texture_frequency=1.5,
                    texture_contrast=0.3, relief=0.3,
                    tint=np.array([1.03, 1.0, 0.95]), sky_level=0.012,
                    sensor_noise=0.012)
    # Side or three-quarter light from either side; a sun straight ahead or
    # straight behind the camera would flatten the rocks.
    azimuth = rng.uniform(-60.0, 50.0)
    if rng.random() < 0.5:
        azimuth = 180.0 - azimuth
    drawn = {"sun_azimuth": azimuth}
    for name, spec in APPEARANCE[kind].items():
        if name == "tint":
            base, spread = spec
            drawn[name] = np.array(base) + rng.uniform(-spread, spread, 3)
        else:
            drawn[name] = rng.uniform(*spec) if isinstance(spec, tuple) else spec
    return drawn


def draw_layout(kind, rng, size):
    """Horizon profile and rock placement; train_dr and train_nodr share this."""
    columns = np.arange(size) + 0.5
    horizon = np.full(size, rng.uniform(0.28, 0.48) * size)
    # Three sinusoids from broad swells to small ridges; amplitudes stay a few
    # percent of the frame so the horizon undulates rather than jags.
    for low, high, amplitude in ((0.3, 1.0, 0.03), (1.0, 2.5, 0.012), (2.5, 6.0, 0.004)):
        cycles = rng.uniform(low, high)
        horizon += rng.uniform(0.0, amplitude) * size * np.sin(
            2 * np.pi * cycles * columns / size + rng.uniform(0, 2 * np.pi))

    field = ROCK_FIELDS["test" if kind == "test_photoreal" else "train"]
    rocks = []
    for number in range(rng.integers(*field["count"], endpoint=True)):
        centre_x = rng.uniform(0, size)
        horizon_row = horizon[min(int(centre_x), size - 1)]
        top, bottom = horizon_row + 2.0, size - 0.5
        share = rng.random()
        if number == 0:
            # One rock in the nearer half so every frame has a visible rock.
            share = 0.4 + 0.6 * share
        centre_y = top + (bottom - top) * share ** field["row_bias"]
        radius = np.clip(field["radius_median"] * math.exp(field["radius_sigma"] * rng.normal()),
                         *field["radius_range"])
        # Apparent size scales with rows below the horizon (pinhole model).
        # The 1.5 px floor with an outline never below 0.6 of the ellipse
        # guarantees the pixel nearest the centre is rock.
        half_width = max(radius * (centre_y - horizon_row) / CAMERA_HEIGHT, 1.5)
        half_height = max(half_width * rng.uniform(0.55, 0.9), 1.5)
        harmonics = np.arange(2, 6)
        rocks.append(dict(centre=(centre_x, centre_y), half_width=half_width,
                          half_height=half_height,
                          outline_amplitudes=rng.normal(0, 0.12, 4) / harmonics * 2,
                          outline_phases=rng.uniform(0, 2 * np.pi, 4)))
    rocks.sort(key=lambda rock: rock["centre"][1])  # paint far to near
    return dict(horizon=horizon, rocks=rocks)


def lattice_noise(lattice, u, v, slopes=True):
    """Smoothstep value noise on a wrapping lattice, with its u and v slopes."""
    mask = lattice.shape[0] - 1
    u_floor, v_floor = np.floor(u), np.floor(v)
    fu, fv = u - u_floor, v - v_floor
    i0 = u_floor.astype(np.int32) & mask
    j0 = v_floor.astype(np.int32) & mask
    i1, j1 = (i0 + 1) & mask, (j0 + 1) & mask
    row0, row1 = j0 * (mask + 1), j1 * (mask + 1)
    flat = lattice.ravel()
    a, b = flat[row0 + i0], flat[row0 + i1]
    c, d = flat[row1 + i0], flat[row1 + i1]
    su, sv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    cross = a - b - c + d
    value = a + (b - a) * su + (c - a) * sv + cross * su * sv
    if not slopes:
        return value, None, None
    du = ((b - a) + cross * sv) * 6 * fu * (1 - fu)
    dv = ((c - a) + cross * su) * 6 * fv * (1 - fv)
    return value, du, dv


def ground_fbm(rng, u, v, frequency, octaves, footprint, persistence=0.5, slopes=True):
    """Multi-octave value noise on ground coordinates, about 0.5 +- 0.5.

    Each octave is turned by a random angle so the lattice axes do not line
    up into streaks across octaves. Octaves finer than the pixel footprint
    fade out towards the horizon, a crude mip-map that keeps far ground from
    aliasing into salt and pepper. Returns the value and, if asked, its
    slopes along u and v.
    """
    total = np.zeros_like(u)
    du_total, dv_total = np.zeros_like(u), np.zeros_like(u)
    amplitude, norm = 1.0, 0.0
    for _ in range(octaves):
        lattice = rng.random((LATTICE_SIZE, LATTICE_SIZE), dtype=np.float32)
        angle = rng.uniform(0.0, 2 * np.pi)
        cos_a, sin_a = math.cos(angle) * frequency, math.sin(angle) * frequency
        weight = amplitude * np.clip(1.5 - 2.0 * frequency * footprint, 0.0, 1.0)
        norm += amplitude
        amplitude *= persistence
        frequency *= 2.0
        visible = weight > 0  # skip the pixels where this octave has faded
        if not visible.any():
            continue
        u_seen, v_seen = u[visible], v[visible]
        value, du, dv = lattice_noise(lattice, cos_a * u_seen - sin_a * v_seen,
                                      sin_a * u_seen + cos_a * v_seen, slopes)
        weight = weight[visible]
        total[visible] += weight * (value - 0.5)
        if slopes:
            du_total[visible] += weight * (cos_a * du + sin_a * dv)
            dv_total[visible] += weight * (cos_a * dv - sin_a * du)
    return 0.5 + total / norm, du_total / norm, dv_total / norm


def screen_noise(rng, size, cells):
    """Value noise in image space, for rock surface grain and shadow edges."""
    lattice = rng.random((cells + 1, cells + 1), dtype=np.float32)
    positions = (np.arange(size, dtype=np.float32) + 0.5) * cells / size
    knots = np.minimum(positions.astype(np.int64), cells - 1)
    # Smoothstep rather than linear blending keeps the field's slopes
    # continuous; linear blending leaves streaks wherever slopes are used.
    # Blending rows then columns by hand, not as a matrix product, keeps
    # BLAS and its thread pool out of it: on a busy machine its threads
    # made frames four times slower.
    step = positions - knots
    step = (step * step * (3 - 2 * step))[:, None]
    rows = lattice[knots] * (1 - step) + lattice[knots + 1] * step
    return rows[:, knots] * (1 - step.T) + rows[:, knots + 1] * step.T


def lunar_lambert(cos_incidence, cos_emission):
    """McEwen's lunar-Lambert reflectance (relative, without albedo)."""
    cos_i = np.maximum(cos_incidence, 0.0)
    cos_e = np.maximum(cos_emission, 0.05)
    weight = LUNAR_LAMBERT_WEIGHT
    return cos_i * ((1 - weight) + 2 * weight / (cos_i + cos_e))


def render_frame(seed, kind, index, size=128):
    """One frame of a split as (rgb uint8 HxWx3, labels uint8 HxW)."""
    layout_rng, look_rng, pixel_rng = frame_streams(seed, kind, index)
    layout = draw_layout(kind, layout_rng, size)
    look = draw_appearance(kind, look_rng)
    focal = float(size)
    horizon = layout["horizon"].astype(np.float32)

    elevation = math.radians(look["sun_elevation"])
    azimuth = math.radians(look["sun_azimuth"])
    # Sun direction in ground axes (right, up, forward away from the camera)
    # and in camera axes (right, down, towards the camera).
    sun_ground = (math.cos(elevation) * math.cos(azimuth), math.sin(elevation),
                  math.cos(elevation) * math.sin(azimuth))
    sun_camera = (sun_ground[0], -sun_ground[1], -sun_ground[2])

    rows = (np.arange(size, dtype=np.float32) + 0.5)[:, None]
    columns = (np.arange(size, dtype=np.float32) + 0.5)[None, :]
    rows_below = rows - horizon[None, :]
    ground_cover = np.clip(rows_below + 0.5, 0.0, 1.0)
    below = np.maximum(rows_below, 0.5)
    distance = focal * CAMERA_HEIGHT / below
    lateral = (columns - size / 2) * CAMERA_HEIGHT / below
    # Ground covered by one pixel: 1/r across, focal/r**2 along the view.
    # Fading octaves by the geometric mean keeps detail the longer side
    # would wipe out, at the price of some foreshortened striation far off.
    footprint = CAMERA_HEIGHT * np.sqrt(focal) / below**1.5

    material, _, _ = ground_fbm(pixel_rng, lateral, distance, look["texture_frequency"],
                                6, footprint, persistence=0.8, slopes=False)
    _, slope_x, slope_z = ground_fbm(pixel_rng, lateral, distance, 0.35, 7, footprint)

    normal_x = -look["relief"] * slope_x
    normal_z = -look["relief"] * slope_z
    normal_norm = np.sqrt(normal_x**2 + 1.0 + normal_z**2)
    cos_incidence = (normal_x * sun_ground[0] + sun_ground[1]
                     + normal_z * sun_ground[2]) / normal_norm
    view_norm = np.sqrt(lateral**2 + CAMERA_HEIGHT**2 + distance**2)
    cos_emission = (-normal_x * lateral + CAMERA_HEIGHT
                    - normal_z * distance) / (normal_norm * view_norm)
    ground_direct = lunar_lambert(cos_incidence, cos_emission)

    grain = screen_noise(pixel_rng, size, max(size // 3, 2))
    blotch = screen_noise(pixel_rng, size, max(size // 12, 2))
    # Slopes of the two noise fields tilt rock normals into facets; the
    # gains put both at a few tenths, whatever the field's feature size.
    fine_y, fine_x = np.gradient(grain)
    coarse_y, coarse_x = np.gradient(blotch)
    bump_x = 1.2 * fine_x + 4.0 * coarse_x
    bump_y = 1.2 * fine_y + 4.0 * coarse_y

    # The octave sum spreads about +-0.2 around 0.5, so contrast 0.5 swings
    # the albedo by roughly +-40 percent.
    ground_albedo = look["albedo"] * np.maximum(
        1 + 4 * look["texture_contrast"] * (material - 0.5), 0.2)

    rock_cover = np.zeros((size, size), np.float32)
    rock_radiance = np.zeros((size, size), np.float32)
    shadow = np.zeros((size, size), np.float32)
    # Shadow direction on the ground, away from the sun, in (right, forward).
    shadow_dir = (-math.cos(azimuth), -math.sin(azimuth))
    shadow_stretch = 1.6 / max(math.tan(elevation), 1e-3)
    for rock in layout["rocks"]:
        centre_x, centre_y = rock["centre"]
        half_width, half_height = rock["half_width"], rock["half_height"]
        foot_y = centre_y + 0.6 * half_height
        horizon_row = float(horizon[min(int(centre_x), size - 1)])
        # Depth distances shrink by rows_below / focal in the image (pinhole).
        foreshortening = max(foot_y - horizon_row, 1.0) / focal
        length = min(shadow_stretch * half_height, 14 * half_height)
        end_x = centre_x + length * shadow_dir[0]
        end_y = foot_y - length * shadow_dir[1] * foreshortening
        margin = 1.5 * half_width + 2
        x0 = max(int(min(centre_x, end_x) - margin), 0)
        x1 = min(int(max(centre_x, end_x) + margin) + 1, size)
        y0 = max(int(min(centre_y - 1.5 * half_height, end_y - margin * foreshortening) - 1), 0)
        y1 = min(int(max(foot_y + half_height, end_y + margin * foreshortening) + 2), size)
        if x0 >= x1 or y0 >= y1:
            continue
        box = (slice(y0, y1), slice(x0, x1))
        dx = columns[:, x0:x1] - centre_x
        dy = rows[y0:y1] - centre_y

        # Cast shadow: the foot disc swept along the shadow direction, in
        # coordinates where ground depth is undone, tapering towards its tip.
        along_x = dx
        along_z = -(rows[y0:y1] - foot_y) / foreshortening
        t = np.clip((along_x * shadow_dir[0] + along_z * shadow_dir[1]) / length, 0.0, 1.0)
        gap = np.hypot(along_x - t * length * shadow_dir[0], along_z - t * length * shadow_dir[1])
        reach = half_width * (0.95 - 0.6 * t * t) * (0.75 + 0.5 * blotch[box])
        shadow[box] = np.maximum(shadow[box], np.clip(reach - gap + 0.5, 0.0, 1.0))

        # Rock body: an ellipse with a few low harmonics on its outline,
        # shaded as a dome whose normal follows the outline.
        ex, ey = dx / half_width, dy / half_height
        angle = np.arctan2(ey, ex)
        outline = np.ones_like(angle)
        for harmonic, amp, phase in zip(range(2, 6), rock["outline_amplitudes"],
                                        rock["outline_phases"]):
            outline += amp * np.cos(harmonic * angle + phase)
        outline = np.maximum(outline, 0.6)
        qx, qy = ex / outline, ey / outline
        radial = np.hypot(qx, qy)
        cover = np.clip((1.0 - radial) * min(half_width, half_height) + 0.5, 0.0, 1.0)
        nx = qx + bump_x[box]
        ny = qy + bump_y[box]
        # A small floor on the camera-facing component keeps the rim from
        # turning edge-on, where lunar-Lambert would blow it out.
        nz = np.sqrt(np.clip(1.0 - radial * radial, 0.0, 1.0)) + 0.05
        n_norm = np.sqrt(nx * nx + ny * ny + nz * nz)
        cos_i = (nx * sun_camera[0] + ny * sun_camera[1] + nz * sun_camera[2]) / n_norm
        direct = lunar_lambert(cos_i, nz / n_norm)
        # Faces turned down catch light bounced off the regolith.
        bounce = AMBIENT * (0.6 + 1.5 * np.clip(qy, 0.0, 1.0))
        albedo = look["albedo"] * look["rock_albedo_ratio"] * (0.7 + 0.6 * grain[box])
        radiance = albedo * (bounce + direct)
        rock_radiance[box] = cover * radiance + (1 - cover) * rock_radiance[box]
        rock_cover[box] = np.maximum(rock_cover[box], cover)

    ground = ground_albedo * (AMBIENT + ground_direct * (1.0 - shadow))
    sky = look["sky_level"] * (0.8 + 0.4 * blotch)
    gray = ground_cover * ground + (1 - ground_cover) * sky
    gray = rock_cover * rock_radiance + (1 - rock_cover) * gray
    rgb = EXPOSURE * gray[..., None] * look["tint"].astype(np.float32)
    # Uniform noise with the drawn standard deviation: a fifth of the cost of
    # Gaussian draws and no different to the eye at these levels.
    noise = pixel_rng.random((size, size, 3), dtype=np.float32) - 0.5
    rgb += (look["sensor_noise"] * math.sqrt(12.0)) * noise
    rgb = np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)

    is_sky = rows_below < 0
    labels = np.where(is_sky, SKY, REGOLITH).astype(np.uint8)
    # Ground pixels touching the sky mix both in the image; label them ignore,
    # as the rendered sets leave the horizon boundary unlabeled.
    touches_sky = np.zeros_like(is_sky)
    touches_sky[1:] |= is_sky[:-1]
    touches_sky[:, 1:] |= is_sky[:, :-1]
    touches_sky[:, :-1] |= is_sky[:, 1:]
    labels[touches_sky & ~is_sky] = IGNORE
    labels[rock_cover >= 0.5] = ROCK
    return rgb, labels


def render_photo(seed, index, width, height):
    """One rock-free frame in a photographic style, as H x W x 3 uint8 RGB.

    Rough regolith under a low sun, the look of Apollo surface photographs: the relief is
    steeper and finer than in the training frames, so its lit and self-shadowed faces make the
    rough grey texture a model can take for rock. Half the frames look down at the ground in
    front (the horizon above the frame), half out to a slightly tilted horizon and a black sky.
    There are no rocks at all, so any rock a model predicts here is a false hazard.
    """
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    view_rng, pixel_rng = [np.random.default_rng(child)
                           for child in np.random.SeedSequence([seed, PHOTO_STREAM, index]).spawn(2)]
    focal = float(width)
    columns = np.arange(width, dtype=np.float32)[None, :] + 0.5
    rows = np.arange(height, dtype=np.float32)[:, None] + 0.5
    if view_rng.random() < 0.5:
        horizon_row = view_rng.uniform(0.12, 0.35) * height
    else:
        horizon_row = -view_rng.uniform(0.3, 1.5) * height  # pitched down: every row is ground
    roll = math.tan(math.radians(view_rng.uniform(-3.0, 3.0)))
    horizon = (horizon_row + roll * (columns - width / 2)).astype(np.float32)
    elevation = math.radians(view_rng.uniform(15.0, 40.0))
    azimuth = view_rng.uniform(-70.0, 70.0)
    if view_rng.random() < 0.5:
        azimuth = 180.0 - azimuth
    azimuth = math.radians(azimuth)
    sun = (math.cos(elevation) * math.cos(azimuth), math.sin(elevation),
           math.cos(elevation) * math.sin(azimuth))
    albedo = view_rng.uniform(0.35, 0.55)
    relief = view_rng.uniform(0.3, 0.6)
    # Clod slopes run about 2.7 at unit relief (slopes grow with frequency), so a few hundredths.
    clod_relief = view_rng.uniform(0.04, 0.08)
    texture_frequency = view_rng.uniform(1.5, 3.0)
    texture_contrast = view_rng.uniform(0.25, 0.4)
    tint = 1.0 + view_rng.uniform(-0.03, 0.03, 3)
    exposure = EXPOSURE * view_rng.uniform(1.2, 1.7)

    rows_below = rows - horizon
    ground_cover = np.clip(rows_below + 0.5, 0.0, 1.0)
    below = np.maximum(rows_below, 0.5)
    distance = focal * CAMERA_HEIGHT / below
    lateral = (columns - width / 2) * CAMERA_HEIGHT / below
    footprint = CAMERA_HEIGHT * np.sqrt(focal) / below**1.5

    material, _, _ = ground_fbm(pixel_rng, lateral, distance, texture_frequency, 6, footprint,
                                persistence=0.8, slopes=False)
    _, swell_x, swell_z = ground_fbm(pixel_rng, lateral, distance, 0.35, 7, footprint)
    # Clods and small pits: relief at a few centimetres, which the training frames' smoother
    # ground lacks and which photographs of the real surface are full of.
    _, clod_x, clod_z = ground_fbm(pixel_rng, lateral, distance, 6.0, 4, footprint)
    normal_x = -(relief * swell_x + clod_relief * clod_x)
    normal_z = -(relief * swell_z + clod_relief * clod_z)
    normal_norm = np.sqrt(normal_x**2 + 1.0 + normal_z**2)
    cos_incidence = (normal_x * sun[0] + sun[1] + normal_z * sun[2]) / normal_norm
    view_norm = np.sqrt(lateral**2 + CAMERA_HEIGHT**2 + distance**2)
    cos_emission = (-normal_x * lateral + CAMERA_HEIGHT - normal_z * distance) / (normal_norm * view_norm)
    ground_albedo = albedo * np.maximum(1 + 4 * texture_contrast * (material - 0.5), 0.2)
    ground = ground_albedo * (AMBIENT + lunar_lambert(cos_incidence, cos_emission))
    gray = ground_cover * ground + (1 - ground_cover) * 0.004

    # A lens darkens towards the corners; film or sensor adds grain.
    radius = ((columns - width / 2) ** 2 + (rows - height / 2) ** 2) / ((width / 2) ** 2 + (height / 2) ** 2)
    gray = gray * (1.0 - 0.3 * radius)
    rgb = exposure * gray[..., None] * tint.astype(np.float32)
    rgb += 0.015 * math.sqrt(12.0) * (pixel_rng.random((height, width, 1), dtype=np.float32) - 0.5)
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


def write_photos(out_dir, count=6, seed=0):
    """Write ``count`` rock-free photographic frames as out_dir/photos/photo_NNN.jpg; return [(name, size, mode)].

    Sizes, aspect ratios and colour modes cycle through PHOTO_SHAPES, none of them the training
    frames' square RGB PNG; a frame depends only on (seed, index). Photos left from an earlier,
    longer run are removed. There are no masks: these frames are for regolith.photos.
    """
    folder = Path(out_dir) / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(count):
        width, height, mode = PHOTO_SHAPES[index % len(PHOTO_SHAPES)]
        image = Image.fromarray(render_photo(seed, index, width, height), mode="RGB")
        if mode == "L":
            image = image.convert("L")
        name = f"photo_{index:03d}.jpg"
        image.save(folder / name, quality=PHOTO_QUALITY)
        written.append((name, (width, height), mode))
    for stale in folder.glob("photo_*.jpg"):
        number = stale.stem.removeprefix("photo_")
        if number.isdigit() and int(number) >= count:
            stale.unlink()
    return written


def write_split(out_dir, kind, frames, size=128, seed=0):
    """Write `frames` frames of split `kind` under out_dir/kind; return its summary.

    Frames left from an earlier, longer run are removed so the split holds
    exactly the frames asked for.
    """
    if kind not in SPLIT_STREAMS:
        raise ValueError(f"split kind {kind!r} is not one of {SPLITS}")
    split_dir = Path(out_dir) / kind
    rgb_dir, mask_dir = split_dir / "rgb", split_dir / "mask"
    rgb_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    rock_pixels = 0
    for index in range(frames):
        rgb, labels = render_frame(seed, kind, index, size)
        rock_pixels += int(np.count_nonzero(labels == ROCK))
        # Fast zlib level: these files are throwaway and the bytes stay
        # deterministic at any level.
        Image.fromarray(rgb, mode="RGB").save(rgb_dir / f"rgb_{index:05d}.png", compress_level=1)
        Image.fromarray(labels, mode="L").save(mask_dir / f"mask_{index:05d}.png", compress_level=1)
    for folder, prefix in ((rgb_dir, "rgb"), (mask_dir, "mask")):
        for stale in folder.glob(f"{prefix}_*.png"):
            number = stale.stem.removeprefix(f"{prefix}_")
            if number.isdigit() and int(number) >= frames:
                stale.unlink()
    return dict(frames=frames, rock_share=rock_pixels / max(frames * size * size, 1))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m regolith.synth",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory that receives one folder per split")
    parser.add_argument("--size", type=int, default=128, help="frame width and height in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dr-frames", type=int, default=160)
    parser.add_argument("--nodr-frames", type=int, default=80)
    parser.add_argument("--test-frames", type=int, default=32)
    parser.add_argument("--photos", type=int, default=0,
                        help="also write this many rock-free photographic JPEG frames to OUT/photos/")
    args = parser.parse_args(argv)
    if args.size < 16:
        parser.error(f"--size must be at least 16 pixels, got {args.size}")
    if args.seed < 0:
        parser.error(f"--seed must be non-negative (it seeds numpy's SeedSequence), got {args.seed}")
    for flag in ("dr_frames", "nodr_frames", "test_frames", "photos"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')} must be non-negative, got {getattr(args, flag)}")
    counts = {"train_dr": args.dr_frames, "train_nodr": args.nodr_frames,
              "test_photoreal": args.test_frames}
    for kind, frames in counts.items():
        summary = write_split(args.out, kind, frames, args.size, args.seed)
        print(f"{kind}: {summary['frames']} frames, rock pixel share "
              f"{100 * summary['rock_share']:.1f}%")
    if args.photos:
        written = write_photos(args.out, args.photos, args.seed)
        shapes = ", ".join(sorted({f"{w}x{h} {mode}" for _, (w, h), mode in written}))
        print(f"photos: {len(written)} rock-free JPEG frames ({shapes}) in {Path(args.out) / 'photos'}")


if __name__ == "__main__":
    main()
