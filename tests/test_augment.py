"""The augmentation list: parsing, what is recorded, the draws from the seeded generator, and applying them."""

import pytest
import torch

from regolith import Refused, augment, names

EVERY = "blur,noise,photometric,gray,hflip"  # any order given; one order applied


def test_the_list_is_parsed_into_apply_order_and_bad_lists_are_refused():
    assert augment.parse(EVERY) == ("hflip", "gray", "photometric", "noise", "blur")
    assert augment.canonical(" Gray, hflip ") == "hflip,gray" and augment.canonical("none") == "none"
    assert augment.parse("none") == ()
    for bad, why in (("hflip,rotate", "unknown 'rotate'"), ("none,gray", "none with others"),
                     ("gray,gray", "a choice twice"), ("", "empty")):
        with pytest.raises(Refused, match=f"augment={bad!r}: {why}; expected a comma-separated list"):
            augment.parse(bad)


def test_each_choice_records_its_ranges():
    assert augment.recorded("hflip") == {"augment_p": "0.5"}
    assert augment.recorded("photometric") == {"augment_range.photometric.brightness": "0.75..1.25",
                                               "augment_range.photometric.contrast": "0.75..1.25",
                                               "augment_range.photometric.gamma": "0.7..1.4"}
    assert set(augment.recorded(EVERY)) == {"augment_p", *(f"augment_range.{name}" for name in augment.RANGES)}
    assert augment.recorded("none") == {}


def test_hflip_alone_draws_what_it_always_drew_and_more_choices_draw_more():
    frames = 10
    before = torch.rand(frames, generator=torch.Generator().manual_seed(3)) < 0.5  # the old draw_flips
    assert torch.equal(augment.draw("hflip", frames, torch.Generator().manual_seed(3))["hflip"], before)
    every = augment.draw(EVERY, frames, torch.Generator().manual_seed(3))
    assert torch.equal(every["hflip"], before)  # hflip first: the same flips with every choice on
    assert set(every) == {"hflip", "gray", "brightness", "contrast", "gamma", "noise_sigma", "blur_sigma", "noise_seed"}
    low, high = augment.RANGES["photometric.gamma"]
    assert ((every["gamma"] >= low) & (every["gamma"] <= high)).all()
    off = every["blur_sigma"] == 0  # where blur does not act on a frame its sigma is 0, elsewhere in range
    assert 0 < off.sum() < frames and (every["blur_sigma"][~off] >= augment.RANGES["blur.sigma"][0]).all()
    assert augment.draw("none", frames, torch.Generator()) is None


def frames_and_masks(n=4, size=16):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), generator=generator, dtype=torch.uint8)
    masks = torch.randint(0, 3, (n, size, size), generator=generator, dtype=torch.uint8)
    return images, masks


def batch(spec: str, n=4, seed=1):
    draws = augment.draw(spec, n, torch.Generator().manual_seed(seed))
    return augment.batch_draws(draws, torch.arange(n), 0, "cpu")


def test_gray_makes_the_three_channels_equal_on_the_frames_drawn_and_leaves_the_mask():
    images, masks = frames_and_masks()
    draws = batch("gray")
    out, out_masks = augment.apply(images, masks, draws)
    assert out.dtype == torch.uint8 and torch.equal(out_masks, masks)
    gray = draws["gray"]
    assert 0 < gray.sum() < 4, "the seed should draw both"
    assert (out[gray][:, 0] == out[gray][:, 2]).all() and torch.equal(out[~gray], images[~gray])


def test_every_choice_keeps_masks_aligned_and_is_reproducible_from_the_draws():
    images, masks = frames_and_masks()
    draws = batch(EVERY)
    first, first_masks = augment.apply(images, masks, draws)
    again, again_masks = augment.apply(images, masks, draws)
    assert torch.equal(first, again) and torch.equal(first_masks, again_masks)  # noise from the drawn seed
    flipped = draws["hflip"]
    assert torch.equal(first_masks[flipped], masks[flipped].flip(-1)) and torch.equal(first_masks[~flipped], masks[~flipped])
    assert not torch.equal(first, augment.hflip(images, masks, flipped)[0])  # something beyond the flip happened
    other = augment.apply(images, masks, batch(EVERY, seed=2))[0]
    assert not torch.equal(first, other)


def test_blur_with_sigma_zero_is_the_identity_and_blurs_otherwise():
    images, _ = frames_and_masks(2)
    pixels = images.float()
    out = augment.blur(pixels, torch.tensor([0.0, 1.0]))
    assert torch.allclose(out[0], pixels[0])
    assert out[1].std() < pixels[1].std()  # smoother
    assert torch.allclose(out[1].mean(), pixels[1].mean(), rtol=0.05)


def test_variant_names_carry_the_levers_that_are_not_the_originals():
    assert names.variant(True, 750) == "dr_750"
    assert names.variant(True, 750, "hflip,gray") == "dr_750+gray"
    assert names.variant(True, 750, "hflip", "b2") == "dr_750@b2"
    assert names.variant(False, 750, "gray,noise", "b5") == "nodr_750+gray+noise+noflip@b5"
    assert names.variant(True, 80, "none") == "dr_80+noflip"
    assert names.variant(True, 6, "hflip", "custom") == "dr_6"  # a test's tiny encoder: no size in the name
    assert names.alias_name("dr_750+gray@b2") == "dr_750-gray-b2"
