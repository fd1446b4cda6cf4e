"""Plotly figures shared by the pages: score gauge, pathology bars with thresholds, fused components."""

from __future__ import annotations

from typing import Any

FONT = {"color": "#fafafa"}
TRANSPARENT = "rgba(0,0,0,0)"
COMPONENT_NAMES = {"recon": "Reconstruction (0.4·σ(z_recon))", "kl": "KL divergence (0.2·σ(z_KL))",
                   "vit": "ViT scorer (0.4·s_ViT)"}


def score_gauge(score: float, threshold: float | None, title: str, height: int = 230):
    """Gauge of a [0, 1] score with the operating threshold marked (green below, red above)."""
    import plotly.graph_objects as go

    gauge: dict[str, Any] = {"axis": {"range": [0, 1], "tickwidth": 1}, "bar": {"color": "#f2a900"}, "bgcolor": "#1b1f27"}
    if threshold is not None:
        gauge["steps"] = [{"range": [0, threshold], "color": "#203a2c"}, {"range": [threshold, 1], "color": "#4a2222"}]
        gauge["threshold"] = {"line": {"color": "#fafafa", "width": 3}, "thickness": 0.85, "value": threshold}
    figure = go.Figure(go.Indicator(
        mode="gauge+number+delta" if threshold is not None else "gauge+number",
        value=score,
        number={"valueformat": ".3f"},
        delta={"reference": threshold, "valueformat": ".3f",
               "increasing": {"color": "#ff6b6b"}, "decreasing": {"color": "#5cb85c"}} if threshold is not None else None,
        title={"text": title, "font": {"size": 14}},
        gauge=gauge,
    ))
    figure.update_layout(height=height, margin={"l": 20, "r": 20, "t": 50, "b": 10}, paper_bgcolor=TRANSPARENT, font=FONT)
    return figure


def components_bars(components: dict[str, float]):
    """The three weighted terms whose sum is the fused anomaly score."""
    import plotly.graph_objects as go

    names = [COMPONENT_NAMES.get(k, k) for k in components]
    figure = go.Figure(go.Bar(x=list(components.values()), y=names, orientation="h", marker_color="#e8590c",
                              text=[f"{v:.3f}" for v in components.values()], textposition="auto"))
    figure.update_layout(height=200, margin={"l": 10, "r": 10, "t": 30, "b": 10}, xaxis={"range": [0, 0.4]},
                         title={"text": "Fused score = sum of the three terms", "font": {"size": 13}},
                         paper_bgcolor=TRANSPARENT, plot_bgcolor=TRANSPARENT, font=FONT)
    return figure


def pathology_bars(probabilities: dict[str, float], thresholds: dict[str, float]):
    """Horizontal bars per label, highest first, with each label's operating threshold as a white tick.

    Labels at or above their threshold are drawn red, the rest teal.
    """
    import plotly.graph_objects as go

    labels = sorted(probabilities, key=lambda k: probabilities[k])
    probs = [float(probabilities[k]) for k in labels]
    colours = ["#e03131" if p >= float(thresholds.get(k, 1.1)) else "#1c7c8c" for k, p in zip(labels, probs)]
    figure = go.Figure(go.Bar(x=probs, y=labels, orientation="h", marker_color=colours,
                              text=[f"{p:.2f}" for p in probs], textposition="outside", name="probability"))
    marked = [k for k in labels if k in thresholds]
    figure.add_trace(go.Scatter(x=[float(thresholds[k]) for k in marked], y=marked, mode="markers",
                                marker={"symbol": "line-ns-open", "size": 18, "line": {"width": 3, "color": "#fafafa"}},
                                name="operating threshold"))
    figure.update_layout(height=max(180, 34 * len(labels) + 80), margin={"l": 10, "r": 30, "t": 36, "b": 10},
                         xaxis={"range": [0, 1.08], "title": "probability"}, showlegend=True,
                         # Above the plot: below it, the legend sat on the x-axis title.
                         legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
                         paper_bgcolor=TRANSPARENT,
                         plot_bgcolor=TRANSPARENT, font=FONT)
    return figure
