"""Plotly figures of the pages: laid out so nothing overlaps."""

from medsight.report.figures import pathology_bars


def test_pathology_legend_sits_above_the_plot_clear_of_the_axis_title():
    figure = pathology_bars({"Consolidation": 0.8, "Effusion": 0.3}, {"Consolidation": 0.5, "Effusion": 0.5})
    legend, axis = figure.layout.legend, figure.layout.xaxis
    assert axis.title.text == "probability"
    assert legend.orientation == "h" and legend.yanchor == "bottom" and legend.y >= 1.0
    assert figure.layout.margin.t >= 30, "room above the plot for the legend"
