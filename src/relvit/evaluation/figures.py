"""The pictures of what a model predicts, drawn once with matplotlib and rendered to RGB tensors, so
that the PNG files of ``python -m relvit.visualize`` and the TensorBoard pictures show the same thing:
a title on every panel, colour bars with their range, a legend of the relation classes."""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from relvit.model.ssl.targets import RELATION_CLASSES

#: Every panel's axes is PANEL_INCHES * DPI pixels tall (at least 300 px, so that a 4 x 4 grid reads).
PANEL_INCHES = 3.2
DPI = 100
#: One colour per relation class, told apart without the legend's names.
RELATION_COLOURS = ListedColormap(["#1f77b4", "#aec7e8", "#17becf", "#2ca02c", "#7f7f7f",
                                   "#d62728", "#9467bd", "#ff7f0e", "#8c564b"])
_SIDES = {"L": "left", "C": "same column", "R": "right", "U": "above", "D": "below"}


def relation_label(name: str) -> str:
    """``"LU"`` -> ``"LU: left, above"``; ``CC`` is the query patch itself."""
    if name == "CC":
        return "CC: the query itself"
    column, row = name[0], name[1]
    return f"{name}: {_SIDES[column]}, {'same row' if row == 'C' else _SIDES[row]}"


def _row(panels: int, legend: bool = False) -> tuple[Figure, list[Axes]]:
    """A figure of ``panels`` square panels of PANEL_INCHES side by side, each with room on its left for
    the axis labels and on its right for a colour bar (and below them, room for a legend)."""
    pitch, below, above = PANEL_INCHES + 1.7, 0.6 + (1.1 if legend else 0.0), 0.9
    width, height = panels * pitch, below + PANEL_INCHES + above
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = [fig.add_axes((i * pitch / width + 0.6 / width, below / height, PANEL_INCHES / width, PANEL_INCHES / height))
            for i in range(panels)]
    return fig, axes


def _image(ax: Axes, shown: torch.Tensor, title: str) -> None:
    """shown [3, H, W] in [0, 1]."""
    ax.imshow(shown.permute(1, 2, 0).clamp(0, 1).cpu().numpy(), interpolation="nearest")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


def _grid(ax: Axes, values: torch.Tensor, side: int, title: str, **style) -> object:
    """values [side * side] as a side x side map; returns the image for a colour bar."""
    drawn = ax.imshow(values.detach().float().cpu().view(side, side).numpy(), interpolation="nearest", **style)
    ax.set_title(title)
    ax.set_xticks(range(side))
    ax.set_yticks(range(side))
    ax.set_xlabel("patch column")
    ax.set_ylabel("patch row")
    return drawn


def _outline(ax: Axes, query: int, side: int, cells: float = 1.0, colour: str = "red") -> None:
    """A box around the query patch; ``cells`` pixels per patch on the axes."""
    row, col = divmod(query, side)
    ax.add_patch(Rectangle((col * cells - 0.5, row * cells - 0.5), cells, cells, fill=False, edgecolor=colour, linewidth=2.5))


def _colour_bar(fig: Figure, drawn: object, ax: Axes, label: str) -> None:
    """A colour bar right of ``ax``, as tall as it, its ticks spanning the range of the map."""
    box, width = ax.get_position(), fig.get_figwidth()
    cax = fig.add_axes((box.x1 + 0.12 / width, box.y0, 0.15 / width, box.height))
    fig.colorbar(drawn, cax=cax, label=label)  # type: ignore[arg-type]


def attention_figure(shown: torch.Tensor, maps: torch.Tensor, side: int) -> Figure:
    """The image and the CLS token's attention to every patch, maps [heads + 1, N] (each head, then the mean)."""
    fig, axes = _row(len(maps) + 1)
    _image(axes[0], shown, "image")
    for k, (ax, weights) in enumerate(zip(axes[1:], maps)):
        name = "mean of the heads" if k == len(maps) - 1 else f"head {k + 1}"
        low, high = float(weights.min()), float(weights.max())  # each map its own range: near-uniform maps still show
        drawn = _grid(ax, weights, side, f"{name}: CLS attention", cmap="viridis", vmin=low, vmax=high)
        _colour_bar(fig, drawn, ax, f"attention weight ({low:.3f} to {high:.3f})")
    fig.suptitle("last block's attention of the CLS token to each patch")
    return fig


def relation_figure(shown: torch.Tensor, query: int, predicted: torch.Tensor, true: torch.Tensor, side: int) -> Figure:
    """Where the head puts every patch relative to the query patch, predicted [N] and true [N] classes."""
    fig, axes = _row(4, legend=True)
    _image(axes[0], shown, "image")
    _image(axes[1], shown, f"query patch {query} (row {query // side}, column {query % side})")
    _outline(axes[1], query, side, shown.shape[-1] / side)
    style = {"cmap": RELATION_COLOURS, "norm": BoundaryNorm(np.arange(-0.5, len(RELATION_CLASSES)), len(RELATION_CLASSES))}
    right = int((predicted.cpu() == true.cpu()).sum())
    for ax, classes, title in ((axes[2], predicted, f"predicted relations ({right} of {side * side} right)"),
                               (axes[3], true, "true relations")):
        _grid(ax, classes, side, title, **style)
        _outline(ax, query, side, colour="white")
    fig.legend(handles=[Patch(color=RELATION_COLOURS(i), label=relation_label(name)) for i, name in enumerate(RELATION_CLASSES)],
               loc="lower center", ncol=5, title="relation class: where a patch lies relative to the query patch", frameon=False)
    fig.suptitle("relation head: the class of every patch relative to the query patch (outlined)")
    return fig


def position_figure(shown: torch.Tensor, predicted: torch.Tensor, true: torch.Tensor, side: int) -> Figure:
    """The position head's class of every patch, predicted [N] and true [N] (raster indices)."""
    fig, axes = _row(3)
    _image(axes[0], shown, "image")
    n = side * side
    right = int((predicted.cpu() == true.cpu()).sum())
    for ax, classes, title in ((axes[1], predicted, f"predicted positions ({right} of {n} right)"),
                               (axes[2], true, "true positions")):
        drawn = _grid(ax, classes, side, title, cmap="viridis", vmin=0, vmax=n - 1)
        _colour_bar(fig, drawn, ax, f"position class (raster index 0 to {n - 1})")
    fig.suptitle("position head: the grid cell each patch is placed in")
    return fig


def rendered(fig: Figure) -> torch.Tensor:
    """The figure as RGB [3, H, W] in [0, 1], the form of PNG files and TensorBoard images."""
    canvas = fig.canvas
    assert isinstance(canvas, FigureCanvasAgg)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1).float() / 255


def texts(fig: Figure) -> list[str]:
    """Every text a figure draws (titles, axis and colour-bar labels, legend), for tests and checks."""
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")) if t.get_text()]  # type: ignore[attr-defined]
