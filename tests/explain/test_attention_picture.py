"""The attention picture reads honestly: one colour scale for every panel, a colour bar with the
uniform level marked on it, each head's peak as a multiple of uniform, and an unmissable banner on
random weights that does not sit on the panel titles."""
import matplotlib
import numpy as np
from PIL import Image

from harness.explain.attention import attention_figure, figure_png

matplotlib.use("Agg")


def _maps(seed=0, labels=2, heads=3, grid=(7, 7)):
    """Near-uniform attention, as a random model's: softmax of small logits over the grid."""
    logits = np.random.default_rng(seed).normal(scale=0.3, size=(labels, heads, grid[0] * grid[1]))
    weights = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return weights.reshape(labels, heads, *grid).astype(np.float32)


def _overlays(fig):
    return [im for ax in fig.axes for im in ax.get_images() if im.get_cmap().name == "inferno"]


def test_every_panel_shares_one_scale_with_a_colour_bar_marking_uniform():
    maps = _maps()
    maps[1, 0, 3, 3] += 0.2  # one sharp head in the second row: the first row must not be rescaled to look as sharp
    fig = attention_figure(Image.new("RGB", (80, 60)), maps, ["person", "dog"], [0.9, 0.2], "title")
    overlays = _overlays(fig)
    assert len(overlays) == 2 * (3 + 1)  # every head and the mean, per label
    assert {(im.norm.vmin, im.norm.vmax) for im in overlays} == {(0.0, float(maps.max()))}
    bar = fig.axes[-1]
    uniform = 1 / 49
    assert any(np.allclose(line.get_ydata(), uniform) for line in bar.get_lines())  # the uniform level on the bar
    assert "uniform 1/49" in bar.get_ylabel()
    titles = [ax.get_title() for ax in fig.axes]
    peak = maps[1, 0].max() / uniform
    assert f"head 1: peak {peak:.1f}x uniform" in titles


def test_near_uniform_maps_are_not_stretched_to_look_vivid():
    maps = _maps(1)
    fig = attention_figure(Image.new("RGB", (64, 64)), maps, ["cat"], [0.5], "t")
    vmax = _overlays(fig)[0].norm.vmax
    assert vmax >= 2 / 49  # the scale reaches at least twice uniform, whatever the maps' own peak


def test_random_weights_carry_a_banner_clear_of_the_titles():
    fig = attention_figure(Image.new("RGB", (64, 48)), _maps(), ["person", "dog"], [0.9, 0.2], "q2l on x.jpg",
                           random_weights=True)
    fig.canvas.draw()
    (banner,) = [t for t in fig.texts if "RANDOM WEIGHTS" in t.get_text()]
    assert banner.get_fontsize() >= 12 and banner.get_weight() == "bold" and banner.get_bbox_patch() is not None
    renderer = fig.canvas.get_renderer()
    box = banner.get_bbox_patch().get_window_extent(renderer)
    for ax in fig.axes[:-1]:  # no panel title (nor panel) under the banner
        assert not box.overlaps(ax.title.get_window_extent(renderer)) and not box.overlaps(ax.get_window_extent())
    plain = attention_figure(Image.new("RGB", (64, 48)), _maps(), ["person"], [0.9], "t")
    assert not any("RANDOM WEIGHTS" in t.get_text() for t in plain.texts)
    assert figure_png(Image.new("RGB", (64, 48)), _maps(labels=1), ["a"], [0.1], "t")[:4] == b"\x89PNG"
