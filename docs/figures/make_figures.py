"""Draws docs/figures/tokens.png: how the DAM target is built from decoder sampling points, on a photo.

Run from the repository root: ``python docs/figures/make_figures.py``. The sampling points are placed by
hand around the photo's objects (no trained model is needed); the splatting onto the token grid, the
binarisation and the top-rho count are the model's own functions (``sparse_detr.modeling.dam`` and
``sparse_detr.modeling.scorers``).
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from skimage import data  # noqa: E402

from sparse_detr.modeling.dam import dam_target, decoder_attention_map  # noqa: E402
from sparse_detr.modeling.scorers import kept_token_counts  # noqa: E402

STRIDES = (8, 16, 32, 64)
KEEP_RATIO = 0.1
# (x, y, spread) in [0, 1] image coordinates: cup, saucer, handle and spoon of skimage's coffee
OBJECTS = ((0.48, 0.38, 0.10), (0.50, 0.68, 0.16), (0.37, 0.64, 0.035), (0.63, 0.70, 0.04))


def sampling(generator: torch.Generator, num_queries=60, heads=8, points=4):
    """Decoder-like sampling: each query looks around one object at every level, softmax weights."""
    levels = len(STRIDES)
    centres = torch.tensor([o[:2] for o in OBJECTS])
    spreads = torch.tensor([o[2] for o in OBJECTS])
    which = torch.randint(len(OBJECTS), (num_queries,), generator=generator)
    shape = (1, 1, num_queries, heads, levels, points)
    offsets = torch.randn(*shape, 2, generator=generator) * spreads[which].view(1, 1, -1, 1, 1, 1, 1) * 0.6
    locations = (centres[which].view(1, 1, -1, 1, 1, 1, 2) + offsets).clamp(0, 1)
    weights = torch.randn(*shape, generator=generator).flatten(-2).softmax(-1).view(shape)
    return locations, weights


def main() -> None:
    out = Path(__file__).with_name("tokens.png")
    photo = data.coffee()  # 400 x 600 RGB
    height, width = photo.shape[:2]
    shapes = torch.tensor([[-(-height // s), -(-width // s)] for s in STRIDES])
    starts = torch.cat([torch.zeros(1, dtype=torch.long), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    num_tokens = int((shapes[:, 0] * shapes[:, 1]).sum())

    locations, weights = sampling(torch.Generator().manual_seed(0))
    dam = decoder_attention_map(locations, weights, shapes, starts)  # [1, N]
    padding = torch.zeros(1, num_tokens, dtype=torch.bool)
    kept = kept_token_counts(padding, KEEP_RATIO)
    target = dam_target(dam, padding, kept)[0]

    h0, w0 = shapes[0].tolist()
    finest = dam[0, : h0 * w0].view(h0, w0).numpy()
    kept_finest = target[: h0 * w0].view(h0, w0).numpy()
    figure, axes = plt.subplots(1, 3, figsize=(13.5, 3.6))
    axes[0].imshow(photo)
    axes[0].set_title(f"{num_tokens} tokens on 4 levels (strides {', '.join(map(str, STRIDES))})", fontsize=9)
    xs = locations[0, 0, ..., 0].flatten().numpy() * width
    ys = locations[0, 0, ..., 1].flatten().numpy() * height
    axes[1].imshow(photo, alpha=0.35)
    axes[1].scatter(xs, ys, s=1.5, c=weights[0, 0].flatten().numpy(), cmap="viridis")
    axes[1].set_title("decoder sampling points, coloured by attention weight", fontsize=9)
    extent = (0, width, height, 0)
    axes[2].imshow(photo)
    axes[2].imshow(np.ma.masked_equal(finest, 0), cmap="magma", alpha=0.55, extent=extent)
    axes[2].contour(
        np.kron(kept_finest, np.ones((STRIDES[0], STRIDES[0])))[:height, :width], levels=[0.5], colors="cyan",
        linewidths=0.8,
    )
    axes[2].set_title(
        f"DAM (finest level) and its top {KEEP_RATIO:.0%}: {int(kept)} tokens kept (cyan)", fontsize=9
    )
    for axis in axes:
        axis.set_axis_off()
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
