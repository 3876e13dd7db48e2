"""Each picture explains itself: a title per panel, colour bars with their range, the relation
classes' legend, panels at least 300 px tall."""
import torch

from relvit.evaluation.figures import attention_figure, position_figure, relation_figure, rendered, texts
from relvit.model.ssl.targets import RELATION_CLASSES, relation_targets

SIDE, QUERY = 4, 10
SHOWN = torch.rand(3, 16, 16)


def titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def panel_heights(fig) -> list[float]:
    rendered(fig)  # lays the figure out
    return [ax.get_window_extent().height for ax in fig.axes if ax.get_title()]


def test_relation_figure_names_its_panels_and_every_class():
    true = relation_targets(SIDE)[:, QUERY]
    predicted = true.clone()
    predicted[0] = 8
    fig = relation_figure(SHOWN, QUERY, predicted, true, SIDE)
    assert titles(fig) == ["image", "query patch 10 (row 2, column 2)", "predicted relations (15 of 16 right)",
                           "true relations"]
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert [label.split(":")[0] for label in labels] == list(RELATION_CLASSES)
    assert "LU: left, above" in labels and "CC: the query itself" in labels and "RC: right, same row" in labels
    assert min(panel_heights(fig)) >= 300


def test_attention_figure_has_a_panel_and_a_colour_bar_with_its_range_per_head_and_the_mean():
    maps = torch.tensor([[0.5] + [0.5 / 15] * 15, [1 / 16] * 16])  # one head, then the mean
    fig = attention_figure(SHOWN, maps, SIDE)
    assert titles(fig) == ["image", "head 1: CLS attention", "mean of the heads: CLS attention"]
    shown = texts(fig)
    assert "attention weight (0.033 to 0.500)" in shown and "attention weight (0.062 to 0.062)" in shown
    assert min(panel_heights(fig)) >= 300
    picture = rendered(fig)
    assert picture.shape[0] == 3 and picture.shape[1] >= 300 and 0 <= picture.min() and picture.max() <= 1


def test_position_figure_counts_the_right_cells_and_shows_the_range():
    predicted = torch.arange(16)
    predicted[:2] = predicted[:2].flip(0)
    fig = position_figure(SHOWN, predicted, torch.arange(16), SIDE)
    assert titles(fig) == ["image", "predicted positions (14 of 16 right)", "true positions"]
    assert texts(fig).count("position class (raster index 0 to 15)") >= 2  # one colour bar per map
    assert min(panel_heights(fig)) >= 300
