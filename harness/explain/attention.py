"""Where each label query of Query2Label looks: the last decoder layer's cross-attention.

The weights are taken by hooks on that layer's `multihead_attn` during the very forward pass
that gives the scores (one pass: a map is never of another model state). The pre-hook asks
nn.MultiheadAttention for per-head weights (`average_attn_weights=False`); that changes only
which weights it returns, not its output, so the scores stay those of `harness predict`. Each
head's weights are a softmax over the H x W feature positions; the mean over heads is what the
authors' decoder returns as `sim_mat_2`. Plots as the paper's Figure 5: a panel per head, then
the mean, each upsampled (bilinear) to the image and overlaid.
"""
import difflib
import io
from contextlib import contextmanager

import numpy as np
import torch

from harness.errors import UserError
from harness.explain.predict import score_images
from harness.models.q2l import Query2Label

NO_ATTENTION = {  # why, for the model its manifest entry describes
    "asl": "pools its TResNet features globally and has no attention",
    "mlspl": "pools its ResNet-50 features globally and has no attention",
}


def check_has_attention(spec):
    """One line for a model without label-to-image attention (before any weights are loaded)."""
    if spec.family != "q2l":
        why = NO_ATTENTION.get(spec.family, "has no label-to-image attention")
        named = f" ({spec.description})" if spec.description else ""
        raise UserError(f"{spec.id}{named} {why}; attention maps exist for the Query2Label models (q2l-*): "
                        f"use `harness predict` for this one")


def label_indices(names, class_names):
    """Column of each --label, or one line naming the closest COCO class."""
    columns = []
    for name in names:
        if name not in class_names:
            close = difflib.get_close_matches(name, class_names, n=1, cutoff=0)
            hint = f"did you mean '{close[0]}'?" if close else "see `harness models`"
            raise UserError(f"--label '{name}' is not a COCO class; {hint} (quote names with spaces, "
                            f"e.g. --label 'traffic light')")
        columns.append(class_names.index(name))
    return columns


@contextmanager
def last_cross_attention(model):
    """Inside: every forward of `model` appends its (B, heads, K, H*W) cross-attention weights."""
    if not isinstance(model, Query2Label):
        raise UserError(f"{type(model).__name__} is not a Query2Label model: it has no decoder cross-attention")
    attn = model.transformer.decoder.layers[-1].multihead_attn
    store = []

    def per_head(module, args, kwargs):
        return args, {**kwargs, "need_weights": True, "average_attn_weights": False}

    def keep(module, args, kwargs, output):
        store.append(output[1].detach().float().cpu())

    hooks = [attn.register_forward_pre_hook(per_head, with_kwargs=True),
             attn.register_forward_hook(keep, with_kwargs=True)]
    try:
        yield store
    finally:
        for hook in hooks:
            hook.remove()


def scores_and_maps(model, spec, paths, *, device, batch_size=None, amp_dtype=None):
    """(images x classes scores, images x classes x heads x H x W maps) from one forward pass."""
    with last_cross_attention(model) as store:
        scores = score_images(model, spec, paths, device=device, batch_size=batch_size, amp_dtype=amp_dtype)
    weights = np.concatenate([w.numpy() for w in store])  # images, heads, K, HW
    grid = tuple(model.backbone[1].pe.shape[-2:])
    maps = weights.reshape(*weights.shape[:3], *grid).transpose(0, 2, 1, 3, 4)  # images, K, heads, H, W
    return scores, np.ascontiguousarray(maps)


def upsample(grid_map, size):
    """A feature-grid map stretched bilinearly to (height, width): the transform squished the
    image onto the grid, so each cell covers the same share of the original image."""
    t = torch.from_numpy(np.ascontiguousarray(grid_map, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def figure_png(image, maps, labels, scores, title, max_side=448, random_weights=False):
    """PNG bytes of `attention_figure`."""
    import matplotlib.pyplot as plt  # lazy: plotting loads slowly and only the PNG needs it

    fig = attention_figure(image, maps, labels, scores, title, max_side, random_weights)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def attention_figure(image, maps, labels, scores, title, max_side=448, random_weights=False):
    """A matplotlib figure: per label a row (the image, each head, the mean of heads), maps overlaid.

    One colour scale for every panel, with its colour bar and the uniform level (1 / (H x W), where
    a map that looks nowhere in particular sits) marked on it: near-uniform attention, as a random
    model's, looks flat instead of showing vivid hot spots. Each head's title says its peak as a
    multiple of uniform. `random_weights`: a red banner across the top that cannot be missed."""
    import matplotlib  # lazy: plotting loads slowly and only the PNG needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable  # lazy: as above
    from matplotlib.colors import Normalize  # lazy: as above

    scale = min(1.0, max_side / max(image.size))
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    pixels = np.asarray(image)
    n_heads, grid = maps.shape[1], maps.shape[-2:]
    uniform = 1.0 / (grid[0] * grid[1])
    rows = [[*label_maps, label_maps.mean(0)] for label_maps in maps]
    norm = Normalize(0.0, max(max(float(m.max()) for row in rows for m in row), 2 * uniform))
    cmap = "inferno"
    columns, panel, header = n_heads + 2, 2.2, 0.7 + (0.75 if random_weights else 0.0)
    width = panel * columns + 1.3  # + the colour bar
    height = (panel * image.height / image.width + 0.35) * len(labels) + header
    fig, axes = plt.subplots(len(labels), columns, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=0.01, right=1 - 1.3 / width, top=1 - header / height, bottom=0.02, wspace=0.04,
                        hspace=0.25)
    for row, (name, score, panels) in enumerate(zip(labels, scores, rows)):
        axes[row][0].imshow(pixels)
        axes[row][0].set_title(f"{name}: score {score:.2f}", fontsize=8)
        for ax, grid_map, panel_name in zip(axes[row][1:], panels, [*(f"head {h + 1}" for h in range(n_heads)),
                                                                      "mean of heads"]):
            ax.imshow(pixels)
            ax.imshow(upsample(grid_map, (image.height, image.width)), cmap=cmap, norm=norm, alpha=0.6)
            ax.set_title(f"{panel_name}: peak {grid_map.max() / uniform:.1f}x uniform", fontsize=7)
        for ax in axes[row]:
            ax.axis("off")
    bar_axes = fig.add_axes((1 - 0.95 / width, 0.06, 0.18 / width, 1 - header / height - 0.1))
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=bar_axes)
    bar.ax.axhline(uniform, color="cyan", lw=2.5)
    bar.ax.text(-0.4, uniform, "uniform", transform=bar.ax.get_yaxis_transform(), ha="right", va="center",
                fontsize=7, color="black")
    bar.set_label(f"attention weight, one scale for every panel (uniform 1/{grid[0] * grid[1]} = {uniform:.4f})",
                  fontsize=7)
    fig.text(0.5, 1 - 0.35 / height, title, ha="center", va="center", fontsize=10)
    if random_weights:
        fig.text(0.5, 1 - (0.7 + 0.38) / height, "RANDOM WEIGHTS: an untrained model, so these maps are not where "
                 "Query2Label looks", ha="center", va="center", fontsize=13, weight="bold", color="white",
                 bbox={"facecolor": "#b91c1c", "edgecolor": "none", "boxstyle": "square,pad=0.45"})
    return fig
