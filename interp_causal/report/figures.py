"""Figures (PNG) for runs and experiments: each function takes plain tensors or rows and a path.

Drawn with matplotlib's object API (``Figure``), so importing or calling this never changes the
pyplot backend of a user's session or notebook.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

Outline = tuple[int, int, int, int, str]  # rows [r0, r1), cols [c0, c1), label


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig, path: str | Path) -> Path:
    """Write the PNG atomically (a temporary file beside ``path``, then a rename)."""
    from probes.files import atomic_write

    return atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png"))


def _heatmap(ax, mat: torch.Tensor, title: str, xlabel: str, ylabel: str, cmap: str = "viridis", center: bool = False):
    m = mat.detach().float().cpu()
    kw = {}
    if center:
        lim = float(m.nan_to_num(0.0).abs().max()) or 1.0
        kw = dict(vmin=-lim, vmax=lim)
    im = ax.imshow(m.numpy(), cmap=cmap, interpolation="nearest", aspect="auto", **kw)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.figure.colorbar(im, ax=ax, shrink=0.85)
    return im


def graph_and_attention(
    adjacency: torch.Tensor,
    learned: Sequence[tuple[str, torch.Tensor]],
    data: Sequence[tuple[str, torch.Tensor]],
    path: str | Path,
    title: str,
) -> Path:
    """The true graph ``[T, T]`` beside learned position attentions and batch-averaged patterns ``[T, T]``."""
    panels = [("true causal graph: parent of each position", adjacency)] + list(learned) + list(data)
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = _figure(4.3 * cols, 3.8 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax, (name, mat) in zip(axes, panels):
        _heatmap(ax, mat, name, "key position j", "query position i", cmap="Greys" if mat is adjacency else "viridis")
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    fig.suptitle(title)
    return _save(fig, path)


def blocks(
    A2: torch.Tensor, W: torch.Tensor, a2_outlines: Sequence[Outline], w_outlines: Sequence[Outline],
    path: str | Path, title: str, a2_tick: Sequence[tuple[int, str]] = (), w_tick: Sequence[tuple[int, str]] = (),
) -> Path:
    """The second layer's ``A`` ``[d, d]`` and the readout ``W`` ``[d_model, S]``, predicted blocks outlined in red."""
    from matplotlib.patches import Rectangle

    fig = _figure(12, 5.6)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[1.4, 1])
    _heatmap(ax1, A2, "layer-2 attention matrix A(2)", "key feature", "query feature", cmap="RdBu_r", center=True)
    _heatmap(ax2, W, "readout W", "output token", "residual feature", cmap="RdBu_r", center=True)
    for ax, outlines, ticks in ((ax1, a2_outlines, a2_tick), (ax2, w_outlines, w_tick)):
        for r0, r1, c0, c1, label in outlines:
            ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, edgecolor="red", linewidth=2))
            ax.annotate(label, (c1 - 1, r1 - 1), color="red", fontsize=8, va="bottom", ha="right")
        if ticks:
            ax.set_yticks([t - 0.5 for t, _ in ticks], [name for _, name in ticks], fontsize=7, va="top")
            if ax is ax1:
                ax.set_xticks([t - 0.5 for t, _ in ticks], [name for _, name in ticks], fontsize=7, rotation=30, ha="left")
            for t, _ in ticks:
                ax.axhline(t - 0.5, color="black", linewidth=0.5, alpha=0.4)
                if ax is ax1:
                    ax.axvline(t - 0.5, color="black", linewidth=0.5, alpha=0.4)
    fig.suptitle(title + "  (red: the blocks the theory predicts)")
    return _save(fig, path)


def training_curves(
    metrics: Sequence[dict], scores: dict[str, tuple[list[int], list[float]]], formed: dict[str, int | None],
    path: str | Path, title: str, stage_split: int | None = None, notes: Sequence[str] = (),
) -> Path:
    """Test loss against Bayes and the baselines (top) and probe scores (bottom) on one step axis,
    the formation steps marked; a stage-wise run's second stage shaded from ``stage_split``, and
    ``notes`` (the run's interventions) written under the title."""
    fig = _figure(9, 7)
    top, bottom = fig.subplots(2, 1, sharex=True)
    steps = [r["step"] for r in metrics]
    top.plot(steps, [r["test_loss"] for r in metrics], label="model (test)", color="black", linewidth=2)
    styles = {"bayes_loss": ("Bayes", "tab:green", "--"), "uniform_loss": ("uniform", "tab:gray", ":"),
              "unigram_loss": ("unigram", "tab:orange", ":"), "one_parent_loss": ("one parent", "tab:purple", "-.")}
    for key, (name, color, style) in styles.items():
        if key in metrics[-1]:
            top.axhline(metrics[-1][key], color=color, linestyle=style, label=name)
    top.set_ylabel("cross-entropy at the last position (nats)")
    top.legend(fontsize=8)
    top.set_title("test loss against the Bayes estimator and the baselines", fontsize=10)
    colors = dict(zip(scores, ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:brown", "tab:olive"]))
    for name, (xs, ys) in scores.items():
        bottom.plot(xs, ys, label=name, color=colors[name], marker=".", markersize=3)
        step = formed.get(name)
        if step is not None:
            for ax in (top, bottom):
                ax.axvline(step, color=colors[name], alpha=0.5, linestyle="--")
            bottom.annotate(f"formed: {step}", (step, 0.02 + 0.08 * list(scores).index(name)), color=colors[name], fontsize=8)
    bottom.set_ylim(-0.05, 1.05)
    bottom.set_ylabel("probe score")
    bottom.set_xlabel("training step (symlog)")
    if scores:
        bottom.legend(fontsize=8, loc="upper left")  # early steps sit low: that corner stays empty
    else:
        bottom.text(0.5, 0.5, "this run was trained without probes", ha="center", transform=bottom.transAxes)
    bottom.set_title("probes on a fixed batch; dashed: step at which each score first reached its threshold", fontsize=10)
    for ax in (top, bottom):
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        if stage_split is not None:
            ax.axvspan(stage_split, max(steps[-1], stage_split), color="tab:cyan", alpha=0.12, linewidth=0)
            ax.axvline(stage_split, color="tab:cyan", linewidth=1.5)
    if stage_split is not None:
        top.annotate(f"stage 1: only layer 1 learns | stage 2 (shaded, from step {stage_split}): only layer 2 ",
                     (stage_split, 0.5), xycoords=("data", "axes fraction"), ha="right", va="bottom",
                     fontsize=8, color="tab:cyan")
    fig.suptitle(title + "".join(f"\n{n}" for n in notes), fontsize=11 if notes else None)
    return _save(fig, path)


def side_by_side(panels: Sequence[tuple[str, torch.Tensor]], path: str | Path, title: str, center: Sequence[bool] = ()) -> Path:
    """Heatmaps ``[T, T]`` in a row (e.g. the descent direction beside the mutual information)."""
    fig = _figure(4.5 * len(panels), 4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for k, (ax, (name, mat)) in enumerate(zip(axes, panels)):
        c = center[k] if k < len(center) else False
        _heatmap(ax, mat, name, "key position j", "query position i", cmap="RdBu_r" if c else "viridis", center=c)
    fig.suptitle(title)
    return _save(fig, path)


def by_position(mean: Sequence[float | None], std: Sequence[float | None], path: str | Path, title: str,
                reference: float | None = None, reference_label: str = "") -> Path:
    """A per-position score, mean and +/- one std across runs (positions with no value are skipped)."""
    fig = _figure(8, 4)
    ax = fig.subplots()
    pos = [i for i, m in enumerate(mean) if m is not None]
    m = [mean[i] for i in pos]
    s = [std[i] or 0.0 for i in pos]
    ax.errorbar(pos, m, yerr=s, fmt="o-", capsize=3, label="mean +/- std across graphs")
    if reference is not None:
        ax.axhline(reference, color="tab:red", linestyle="--", label=reference_label)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("position i")
    ax.set_ylabel("attention on the true parent")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def head_map(grids: dict[str, torch.Tensor], path: str | Path, title: str) -> Path:
    """One layer x head heatmap per score (``probes.heads.head_scores``), each cell annotated: which
    head does what, at a glance."""
    fig = _figure(3.2 * len(grids) + 1, 0.45 * max(g.shape[0] for g in grids.values()) + 2.2)
    axes = fig.subplots(1, len(grids), squeeze=False)[0]
    for ax, (name, grid) in zip(axes, grids.items()):
        im = ax.imshow(grid.numpy(), cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
        ax.set_title(name.replace("_", " "), fontsize=10)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(grid.shape[1]))
        ax.set_yticks(range(grid.shape[0]))
        if grid.numel() <= 256:
            for (l, h), v in zip(((l, h) for l in range(grid.shape[0]) for h in range(grid.shape[1])), grid.flatten()):
                ax.text(h, l, f"{float(v):.2f}", ha="center", va="center", fontsize=7,
                        color="black" if float(v) > 0.6 else "white")
    fig.colorbar(im, ax=axes.tolist(), shrink=0.85)
    fig.suptitle(title)
    return _save(fig, path)


def scores_over_steps(series: dict[str, tuple[list[int], list[float]]], formed: dict[str, int | None],
                      path: str | Path, title: str) -> Path:
    """Each score of its best head against the training step, the formation steps marked."""
    fig = _figure(8, 4.5)
    ax = fig.subplots()
    for name, (steps, values) in series.items():
        line = ax.plot(steps, values, marker="o", markersize=3, label=name)[0]
        if formed.get(name) is not None:
            ax.axvline(formed[name], color=line.get_color(), linestyle="--", alpha=0.6)
    ax.set_xlabel("training step")
    ax.set_ylabel("score of the best head")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("dashed: the step at which each score first reached its threshold", fontsize=10)
    fig.suptitle(title)
    return _save(fig, path)


def compare_runs(
    losses: dict[str, tuple[list[int], list[float]]], references: dict[str, float],
    scores: dict[str, tuple[list[int], list[float]]], score_label: str, path: str | Path, title: str,
    marks: dict[str, int | None] | None = None, stage_split: int | None = None,
) -> Path:
    """Several runs of one task: their test losses against reference levels (Bayes, baselines; top)
    and one probe score per run (bottom) on a shared step axis; ``marks``: a step per run (the end
    of its plateau), drawn as a dot on its loss curve; ``stage_split``: where a stage-wise run's
    second stage begins."""
    fig = _figure(9, 7.5)
    top, bottom = fig.subplots(2, 1, sharex=True)
    palette = ["black", "tab:blue", "tab:red", "tab:green", "tab:purple", "tab:brown", "tab:olive"]
    colors = dict(zip(losses, palette * (1 + len(losses) // len(palette))))
    for name, (xs, ys) in losses.items():
        top.plot(xs, ys, label=name, color=colors[name], linewidth=1.8)
        step = (marks or {}).get(name)
        if step is not None and step in xs:
            top.plot([step], [ys[xs.index(step)]], "o", color=colors[name], markersize=6)
    for (name, value), style in zip(references.items(), ["--", ":", "-.", (0, (5, 2, 1, 2))]):
        top.axhline(value, color="tab:gray", linestyle=style, label=name)
    top.set_ylabel("test cross-entropy (nats)")
    top.legend(fontsize=8, loc="upper right")
    top.set_title("test loss; dots: end of the plateau (halfway from the one-parent or graph-free loss to Bayes)",
                  fontsize=10)
    for name, (xs, ys) in scores.items():
        bottom.plot(xs, ys, label=name, color=colors.get(name, "tab:gray"), marker=".", markersize=3)
    bottom.set_ylim(-0.05, 1.05)
    bottom.set_ylabel(score_label)
    bottom.set_xlabel("training step (symlog)")
    if scores:
        bottom.legend(fontsize=8, loc="upper left")
    bottom.set_title(f"{score_label}, on a fixed probe batch", fontsize=10)
    for ax in (top, bottom):
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        if stage_split is not None:
            ax.axvline(stage_split, color="tab:cyan", linewidth=1.2, linestyle="--")
    if stage_split is not None:
        top.annotate(f"stage-wise run: stage 2 from step {stage_split} ", (stage_split, 0.02),
                     xycoords=("data", "axes fraction"), ha="right", va="bottom", fontsize=8, color="tab:cyan")
    fig.suptitle(title)
    return _save(fig, path)


def head_grids_over_training(grids: dict[str, list[tuple[int, torch.Tensor]]], path: str | Path, title: str) -> Path:
    """One row per mechanism, one layer x head heatmap ``[layers, heads]`` per chosen step: where
    in a multi-head model each mechanism forms, and when."""
    rows, cols = len(grids), max(len(v) for v in grids.values())
    first = next(iter(grids.values()))[0][1]
    fig = _figure(2.1 * cols + 1.2, (0.35 * first.shape[0] + 1.4) * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False)
    im = None
    for r, (name, series) in enumerate(grids.items()):
        for c in range(cols):
            ax = axes[r, c]
            if c >= len(series):
                ax.set_axis_off()
                continue
            step, grid = series[c]
            im = ax.imshow(grid.numpy(), cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
            ax.set_title(f"{name}\nstep {step}" if c == 0 else f"step {step}", fontsize=8)
            ax.set_xticks(range(grid.shape[1]))
            ax.set_yticks(range(grid.shape[0]))
            ax.tick_params(labelsize=7)
            if c == 0:
                ax.set_ylabel("layer", fontsize=8)
            if r == rows - 1:
                ax.set_xlabel("head", fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
    fig.suptitle(title)
    return _save(fig, path)


def against_option(rows: Sequence[dict], option: str, x_values: Sequence[str], group_by: Sequence[str],
                   panels: Sequence[tuple[str, str]], path: str | Path, title: str,
                   references: dict[str, str] | None = None) -> Path:
    """A sweep's results against one option: one panel per ``(column, label)``, x the option's
    values (numbers on a number axis, log when they span 20x; names in grid order), one line per
    combination of the ``group_by`` options, each point the mean over the rows that share it (the
    seeds) with a band of +/- one standard deviation and the rows themselves as dots. Against the
    seed itself, the dots and their mean. ``references``: ``column -> reference column`` drawn
    dashed in the same colour (Bayes beside the loss). Empty cells (a mechanism that never formed)
    are counted in the panel's corner."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    try:
        xs = {v: float(v) for v in x_values}
        numeric = True
    except ValueError:
        xs, numeric = {v: float(i) for i, v in enumerate(x_values)}, False
    seeds = option == "seed"
    groups = sorted({tuple(r[g] for g in group_by) for r in rows}, key=lambda key: [str(k) for k in key])
    cols = min(3, len(panels))
    n_rows = math.ceil(len(panels) / cols)
    fig = _figure(4.4 * cols, 3.4 * n_rows + 0.5)
    axes = fig.subplots(n_rows, cols, squeeze=False).ravel()
    palette = ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:olive", "black"]
    refs = references or {}
    for ax, (column, label) in zip(axes, panels):
        for gi, key in enumerate(groups):
            color = palette[gi % len(palette)]
            mine = [r for r in rows if tuple(r[g] for g in group_by) == key and r[option] in xs]
            name = ", ".join(f"{g}={k}" for g, k in zip(group_by, key)) or None
            for col, dashed in [(column, False)] + ([(refs[column], True)] if column in refs else []):
                pts = [(xs[r[option]], float(r[col])) for r in mine if r.get(col) not in (None, "")]
                if not pts:
                    continue
                at = sorted({x for x, _ in pts})
                ys = [np.array([y for x, y in pts if x == a]) for a in at]
                mean, std = np.array([y.mean() for y in ys]), np.array([y.std() for y in ys])
                label_ = (refs[column].replace("_", " ") + (f" ({name})" if name else "")) if dashed else name
                if seeds:  # seeds are not an axis to draw a trend along: the dots and their mean
                    ax.plot([x for x, _ in pts], [y for _, y in pts], "o", color=color, alpha=0.5 if dashed else 0.9,
                            markersize=4, label=label_)
                    ax.axhline(float(np.mean([y for _, y in pts])), color=color, linestyle="--" if dashed else ":")
                    continue
                ax.plot(at, mean, "--" if dashed else "-", color=color, marker=None if dashed else "o", markersize=4,
                        label=label_)
                if not dashed:
                    ax.fill_between(at, mean - std, mean + std, color=color, alpha=0.18, linewidth=0)
                    ax.plot([x for x, _ in pts], [y for _, y in pts], ".", color=color, alpha=0.45, markersize=4)
        never = sum(r.get(column) in (None, "") for r in rows)
        if never:
            ax.annotate(f"never formed: {never} of {len(rows)}" if column.endswith("_step") else f"missing: {never}",
                        (0.98, 0.96), xycoords="axes fraction", ha="right", va="top", fontsize=8, color="tab:gray")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel(option.replace("_", "-"))
        ax.grid(alpha=0.3)
        if numeric:
            positive = [v for v in xs.values() if v > 0]
            if len(positive) == len(xs) and max(positive) / min(positive) >= 20:
                ax.set_xscale("log")
            elif all(v == int(v) for v in xs.values()):
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            ax.set_xticks(list(xs.values()), list(xs), rotation=20 if max(map(len, xs)) > 6 else 0)
        if ax.get_legend_handles_labels()[0] and (len(groups) > 1 or column in refs):
            ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    fig.suptitle(title)
    return _save(fig, path)
