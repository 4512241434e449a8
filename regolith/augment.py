"""Training-frame augmentation: the choices of ``--augment``, what each draws per frame, and applying them.

    python -m regolith.train --split DIR --augment hflip,gray,photometric,noise,blur

``augment`` is a comma-separated list of ``CHOICES``; the default ``hflip`` is the original's
recipe, ``none`` is nothing. Whatever the order given, they apply in one order: hflip (image and
mask together), then on the image only gray, photometric, blur and noise (sensor noise last, as a
camera adds it). Every random number comes from the run's data generator, which ``state.pt``
saves, so a killed and resumed run augments exactly as an unbroken one: ``draw`` takes an epoch's
per-frame draws from it on the host, and the per-pixel noise is generated on the device from a
seed drawn there. ``apply`` runs on the device, on training batches only (validation never sees it).
"""

import torch
import torch.nn.functional as F

from regolith import Refused, names

DEFAULT = names.DEFAULT_AUGMENT
CHOICES = ("hflip", "gray", "photometric", "noise", "blur")  # the order they apply in
NONE = "none"  # names.variant reads the same word
P = 0.5  # each choice but photometric acts on a frame with this probability; photometric jitters every frame
# The ranges each draw is uniform over (recorded with the run as augment_range.<name> = low..high). Brightness
# and contrast are factors (contrast about the frame's mean), gamma the exponent on [0, 1] values, noise the
# Gaussian's standard deviation in 8-bit levels, blur the Gaussian's sigma in pixels (a 5-tap kernel).
RANGES = {"photometric.brightness": (0.75, 1.25), "photometric.contrast": (0.75, 1.25),
          "photometric.gamma": (0.7, 1.4), "noise.sigma": (2.0, 8.0), "blur.sigma": (0.3, 1.2)}
BLUR_TAPS = 5
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")


def parse(augment: str) -> tuple:
    """The choices of a comma-separated ``augment``, in the order they apply; () for ``none``."""
    given = [part.strip().lower() for part in augment.split(",") if part.strip()]
    unknown = [part for part in given if part not in (*CHOICES, NONE)]
    if unknown or not given or (NONE in given and len(given) > 1) or len(set(given)) < len(given):
        why = (f"unknown {', '.join(map(repr, unknown))}" if unknown else "none with others" if NONE in given
               else "a choice twice" if given else "empty")
        raise Refused(f"augment={augment!r}: {why}; expected a comma-separated list of {', '.join(CHOICES)}, "
                      f"or {NONE}")
    return tuple(choice for choice in CHOICES if choice in given)


def canonical(augment: str) -> str:
    """``augment`` as recorded in the tag and compared: its choices in apply order, or ``none``."""
    return ",".join(parse(augment)) or NONE


def recorded(augment: str) -> dict:
    """The params a run records beside ``augment``: the probability and each range of its choices."""
    chosen = parse(augment)
    ranges = {f"{names.AUGMENT_RANGE}.{name}": f"{low:g}..{high:g}" for name, (low, high) in RANGES.items()
              if name.split(".")[0] in chosen}
    return {**({names.AUGMENT_P: f"{P:g}"} if set(chosen) - {"photometric"} else {}), **ranges}


def _uniform(name: str, frames: int, generator) -> torch.Tensor:
    low, high = RANGES[name]
    return low + (high - low) * torch.rand(frames, generator=generator)


def draw(augment: str, frames: int, generator: torch.Generator) -> dict | None:
    """One epoch's draws, one entry per position of its frame order; None without augmentation.

    hflip is drawn first and alone as before, so a plain ``hflip`` run draws what it always drew.
    Where a choice does not act on a frame its value is the identity (factor 1, sigma 0).
    """
    chosen = parse(augment)
    if not chosen:
        return None
    draws = {}
    if "hflip" in chosen:
        draws["hflip"] = torch.rand(frames, generator=generator) < P
    if "gray" in chosen:
        draws["gray"] = torch.rand(frames, generator=generator) < P
    if "photometric" in chosen:
        for name in ("brightness", "contrast", "gamma"):
            draws[name] = _uniform(f"photometric.{name}", frames, generator)
    for choice in ("noise", "blur"):
        if choice in chosen:
            acts = torch.rand(frames, generator=generator) < P
            draws[f"{choice}_sigma"] = torch.where(acts, _uniform(f"{choice}.sigma", frames, generator), 0.0)
    if "noise" in chosen:  # one seed per position; a batch's noise comes from its first position's seed
        draws["noise_seed"] = torch.randint(0, 2 ** 62, (frames,), generator=generator)
    return draws


def to_device(draws: dict | None, device) -> dict | None:
    """An epoch's draws where the frames are, once an epoch (no index crosses to the GPU per step); seeds stay here."""
    if draws is None:
        return None
    return {key: value if key == "noise_seed" else value.to(device) for key, value in draws.items()}


def batch_draws(draws: dict | None, positions: torch.Tensor, first: int, device) -> dict | None:
    """The draws of one batch's positions, on the device; ``first``, the global batch's first position, picks
    the noise seed as a host integer (no sync)."""
    if draws is None:
        return None
    batch = {key: value[positions].to(device, non_blocking=True) for key, value in draws.items() if key != "noise_seed"}
    if "noise_seed" in draws:
        batch["noise_seed"] = int(draws["noise_seed"][first])
    return batch


def hflip(images: torch.Tensor, masks: torch.Tensor, flip: torch.Tensor) -> tuple:
    """Flip image and mask together where ``flip`` (one bool per frame) says so; on the device, no host sync."""
    return (torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images),
            torch.where(flip.view(-1, 1, 1), masks.flip(-1), masks))


def blur(pixels: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A separable Gaussian blur of float N x 3 x H x W with one sigma per frame (0: unchanged)."""
    offsets = torch.arange(BLUR_TAPS, device=pixels.device, dtype=pixels.dtype) - BLUR_TAPS // 2
    safe = sigma.clamp(min=1e-3).view(-1, 1)
    taps = torch.exp(-0.5 * (offsets / safe) ** 2)
    taps = torch.where(sigma.view(-1, 1) > 0, taps / taps.sum(1, keepdim=True), (offsets == 0).to(taps.dtype))
    n, c, h, w = pixels.shape
    kernel = taps.repeat_interleave(c, 0)  # one kernel per frame and channel: a grouped convolution
    flat = F.pad(pixels.reshape(1, n * c, h, w), (BLUR_TAPS // 2,) * 4, mode="reflect")
    flat = F.conv2d(flat, kernel.view(n * c, 1, 1, BLUR_TAPS), groups=n * c)
    flat = F.conv2d(flat, kernel.view(n * c, 1, BLUR_TAPS, 1), groups=n * c)
    return flat.view(n, c, h, w)


def apply(images: torch.Tensor, masks: torch.Tensor, batch: dict | None, rank: int = 0) -> tuple:
    """One training batch augmented as ``batch`` (``batch_draws``) says: uint8 images and masks in, the same out."""
    if not batch:
        return images, masks
    if "hflip" in batch:
        images, masks = hflip(images, masks, batch["hflip"])
    if set(batch) <= {"hflip"}:
        return images, masks  # the original's recipe stays in uint8, exactly as before
    pixels = images.float()
    if "gray" in batch:
        luma = sum(weight * pixels[:, channel:channel + 1] for channel, weight in enumerate(LUMA)).expand_as(pixels)
        pixels = torch.where(batch["gray"].view(-1, 1, 1, 1), luma, pixels)
    if "brightness" in batch:
        pixels = pixels * batch["brightness"].view(-1, 1, 1, 1)
        mean = pixels.mean((1, 2, 3), keepdim=True)
        pixels = ((pixels - mean) * batch["contrast"].view(-1, 1, 1, 1) + mean).clamp(0, 255)
        pixels = 255 * (pixels / 255) ** batch["gamma"].view(-1, 1, 1, 1)
    if "blur_sigma" in batch:
        pixels = blur(pixels, batch["blur_sigma"])
    if "noise_sigma" in batch:
        generator = torch.Generator(device=pixels.device).manual_seed(batch["noise_seed"] + rank)
        noise = torch.randn(pixels.shape, generator=generator, device=pixels.device, dtype=pixels.dtype)
        pixels = pixels + noise * batch["noise_sigma"].view(-1, 1, 1, 1)
    return pixels.round().clamp(0, 255).to(torch.uint8), masks
