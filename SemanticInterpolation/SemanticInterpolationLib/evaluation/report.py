"""Evaluation reports: per-slice CSV, summary table (CSV, Markdown, plain rows), box plots, montage.

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend
change), so this works in a terminal, in tests and inside the Slicer application.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..volumes.fileio import atomic_output
from .metrics import METRIC_LABELS, METRICS, VIF_MIN_SIZE
from .runner import EvaluationResult
from .statistics import one_sided_wilcoxon

METHOD_LABELS = {"asi": "ASI", "asi+adapt": "ASI adapted", "linear": "Linear", "bspline": "B-spline",
                 "lanczos": "Lanczos"}
METHOD_COLOURS = {"asi": "#d62728", "asi+adapt": "#9467bd", "bspline": "#1f77b4", "linear": "#7f7f7f",
                  "lanczos": "#2ca02c"}
SUMMARY_COLUMNS = ["factor", "method", "slices",
                   *[f"{m}_{s}" for m in METRICS for s in ("mean", "std")],
                   *[f"p_{m}" for m in METRICS], "seconds"]


#: how reports name the evaluated model (method ``"asi"``) by its model type
MODEL_TYPE_LABELS = {"asi": "ASI", "pair-unet": "Pair U-Net",
                     "profile-routed": "Profile-routed pair U-Nets", "hrinet": "HRINet", "xuan-vae": "Xuan VAE",
                     "sr-generator": "SR generator"}


def model_label(model_type: str | None) -> str:
    """Report name of the evaluated model: its type's label (``"ASI"`` when the type is not known)."""
    if model_type is None:
        return "ASI"
    return MODEL_TYPE_LABELS.get(model_type, model_type)


def method_label(method: str, model_type: str | None = None) -> str:
    """Report name of ``method``; the evaluated model (``"asi"``, ``"asi+adapt"``) is named by ``model_type``."""
    if method == "asi":
        return model_label(model_type)
    if method == "asi+adapt":
        return f"{model_label(model_type)} adapted"
    return METHOD_LABELS.get(method, method)


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation of the non-NaN values (inf stays inf; NaN when none)."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    if np.isinf(values).any():
        return float(np.mean(values)), float("nan")
    return float(np.mean(values)), float(np.std(values, ddof=1)) if values.size > 1 else 0.0


def summary_records(result: EvaluationResult) -> list[dict[str, Any]]:
    """One dict per (K, method) with keys :data:`SUMMARY_COLUMNS` (numbers; p-values None for ASI or without ASI).

    ``p_<metric>``: one-sided Wilcoxon signed-rank p-value that ASI scores higher than this
    method, paired per slice over all volumes at that K.
    """
    records = []
    for factor in result.factors:
        for method in result.methods:
            record: dict[str, Any] = {"factor": factor, "method": method}
            record["slices"] = int(result.scores(method, factor, "ssim").size)
            for metric in METRICS:
                mean, std = _mean_std(result.scores(method, factor, metric))
                record[f"{metric}_mean"], record[f"{metric}_std"] = mean, std
                record[f"p_{metric}"] = None
                if method != "asi" and "asi" in result.methods:
                    test = one_sided_wilcoxon(result.scores("asi", factor, metric), result.scores(method, factor, metric))
                    record[f"p_{metric}"] = test.p_value
            record["seconds"] = float(sum(r.seconds for r in result.runs if r.factor == factor and r.method == method))
            records.append(record)
    return records


def _format_number(value: Any, digits: int) -> str:
    if value is None:
        return ""
    value = float(value)
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


def format_p(value: Any) -> str:
    if value is None:
        return ""
    value = float(value)
    if math.isnan(value):
        return "n/a"
    return f"{value:.2g}" if value >= 1e-3 else f"{value:.1e}"


DIGITS = {"ssim": 4, "psnr": 2, "vif": 4}


def summary_table(result: EvaluationResult) -> tuple[list[str], list[list[str]]]:
    """The summary as a header and rows of strings, ready to fill a table (e.g. a Slicer table node).

    Columns: K, Method, Slices, SSIM, PSNR (dB), VIF (each "mean ± std"), then
    "p SSIM", "p PSNR", "p VIF" (ASI > this method, one-sided Wilcoxon), "Time (s)".
    """
    header = ["K", "Method", "Slices", *[METRIC_LABELS[m] for m in METRICS],
              *[f"p {METRIC_LABELS[m].split(' ')[0]} ({model_label(result.model_type)} >)" for m in METRICS],
              "Time (s)"]
    rows = []
    for record in summary_records(result):
        row = [str(record["factor"]), method_label(record["method"], result.model_type), str(record["slices"])]
        for metric in METRICS:
            mean, std = record[f"{metric}_mean"], record[f"{metric}_std"]
            row.append(f"{_format_number(mean, DIGITS[metric])} ± {_format_number(std, DIGITS[metric])}")
        row += [format_p(record[f"p_{metric}"]) for metric in METRICS]
        row.append(f"{record['seconds']:.1f}")
        rows.append(row)
    return header, rows


def _write_text(path: Path, text: str) -> Path:
    with atomic_output(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    return "" if value is None else value


def write_scores_csv(result: EvaluationResult, path: Path) -> Path:
    """Per-slice scores: volume, factor, method, slice_index (fine-volume index), offset (i of i/K), ssim, psnr, vif."""
    names = list(result.columns)
    rows = [[_csv_value(v) for v in values] for values in zip(*(result.columns[n] for n in names))]
    return _write_text(path, _csv_text(names, rows))


def write_summary_csv(result: EvaluationResult, path: Path) -> Path:
    rows = [[_csv_value(r[c]) for c in SUMMARY_COLUMNS] for r in summary_records(result)]
    return _write_text(path, _csv_text(SUMMARY_COLUMNS, rows))


def timing_text(result: EvaluationResult) -> str:
    total = result.seconds
    minutes, seconds = divmod(total, 60.0)
    return f"{int(minutes)} min {seconds:.1f} s" if minutes else f"{seconds:.1f} s"


def summary_markdown(result: EvaluationResult) -> str:
    settings = result.settings
    header, rows = summary_table(result)
    lines = ["# Through-plane upsampling evaluation", ""]
    lines.append(f"- Volumes: {', '.join(f'{v} (slice axis {result.slice_axes[v]})' for v in result.volumes)}")
    lines.append(f"- Factors K: {', '.join(map(str, result.factors))}; methods: "
                 f"{', '.join(method_label(m, result.model_type) for m in result.methods)}")
    noise = settings.acquisition_noise
    noise_text = (f"; then Rician noise of sigma {noise:g} x the volume's 99th percentile added to the kept slices only "
                  f"(seed {settings.noise_seed}), so the scored slices share no noise with the inputs" if noise else "")
    lines.append(f"- Simulation: every K-th slice kept{' after a Gaussian through-plane blur with FWHM = K x spacing' if settings.thick_slices else ' (no blur)'}"
                 f"{noise_text}; only the removed slices are scored, against the real ones")
    lines.append(f"- Model ({model_label(result.model_type)}, method asi): "
                 f"{result.model if result.model else 'not evaluated (no checkpoint given)'}")
    lines.append("- Scores on the reference's 1st-99th percentile range scaled to [0, 1] (clamped). SSIM: Wang et al. "
                 "2004, Gaussian 11x11, sigma 1.5. PSNR: data range 1. VIF: pixel-domain multi-scale VIF "
                 f"(Sheikh & Bovik 2006, vifp_mscale; needs slices of at least {VIF_MIN_SIZE}x{VIF_MIN_SIZE} pixels)")
    lines.append(f"- p: one-sided Wilcoxon signed-rank test that the model ({model_label(result.model_type)}) scores "
                 "higher than that method, paired per slice")
    lines.append(f"- Time: {timing_text(result)}")
    lines += [f"- Note: {note}" for note in result.notes]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path, dpi: int = 100) -> Path:
    with atomic_output(path) as temporary:
        figure.savefig(str(temporary), dpi=dpi, format="png", bbox_inches="tight")
    return Path(path)


def plot_boxplots(result: EvaluationResult, path: Path) -> Path:
    """Box plots like the paper's Fig. 10/13: one panel per measure, per K one box per method, mean as a triangle."""
    metrics = list(METRICS)
    figure = _figure(5.0 * len(metrics), 4.2)
    n_methods = len(result.methods)
    width = 0.8 / n_methods
    for column, metric in enumerate(metrics):
        axes = figure.add_subplot(1, len(metrics), column + 1)
        any_data = False
        for m_index, method in enumerate(result.methods):
            data, positions = [], []
            for k_index, factor in enumerate(result.factors):
                values = result.scores(method, factor, metric)
                values = values[np.isfinite(values)]
                if values.size:
                    data.append(values)
                    positions.append(k_index + (m_index - (n_methods - 1) / 2.0) * width)
            if not data:
                continue
            any_data = True
            colour = METHOD_COLOURS.get(method, "#9467bd")
            axes.boxplot(data, positions=positions, widths=width * 0.85, patch_artist=True, showmeans=True,
                         manage_ticks=False, showfliers=True,
                         boxprops={"facecolor": colour, "alpha": 0.55, "edgecolor": colour},
                         medianprops={"color": "black"},
                         meanprops={"marker": "^", "markerfacecolor": "white", "markeredgecolor": "black", "markersize": 5},
                         flierprops={"marker": ".", "markersize": 2, "markeredgecolor": colour, "alpha": 0.5},
                         whiskerprops={"color": colour}, capprops={"color": colour})
            axes.plot([], [], color=colour, linewidth=8, alpha=0.55, label=method_label(method, result.model_type))
        axes.set_xticks(range(len(result.factors)))
        axes.set_xticklabels([f"K={k}" for k in result.factors])
        axes.set_xlim(-0.6, len(result.factors) - 0.4)
        axes.set_title(METRIC_LABELS[metric])
        axes.grid(axis="y", alpha=0.3)
        if not any_data:
            axes.text(0.5, 0.5, f"{METRIC_LABELS[metric]} not available\n(slices under {VIF_MIN_SIZE} pixels\n"
                      "or constant references)" if metric == "vif" else "no finite values",
                      ha="center", va="center", transform=axes.transAxes)
    handles, labels = figure.axes[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False,
                      bbox_to_anchor=(0.5, -0.06))
    title = "Synthesized slices vs removed real slices" + (" (thick slices simulated)" if result.settings.thick_slices else "")
    figure.suptitle(f"{title}; triangle = mean", fontsize=11)
    return _save(figure, path)


def plot_montage(result: EvaluationResult, volume: str, path: Path) -> Path:
    """Per K: the reference removed slice and each method's synthesized slice (grey, [0, 1]), and below
    them reference minus method on one diverging colour scale [-1, 1] (blue negative, red positive)."""
    shown = [m for m in result.montage if m.volume == volume]
    methods = list(result.methods)
    n_cols = 1 + len(methods)
    figure = _figure(2.3 * n_cols, 2.1 * 2 * max(1, len(shown)))
    grid = figure.add_gridspec(2 * max(1, len(shown)), n_cols, hspace=0.3, wspace=0.05, top=0.95, bottom=0.02)
    difference_image = None
    for row, item in enumerate(shown):
        aspect = item.pixel_aspect
        axes = figure.add_subplot(grid[2 * row, 0])
        axes.imshow(item.reference, cmap="gray", vmin=0, vmax=1, aspect=aspect, interpolation="nearest")
        axes.set_title(f"Reference K={item.factor}\nslice {item.slice_index} ({item.offset}/{item.factor})", fontsize=8)
        caption = figure.add_subplot(grid[2 * row + 1, 0])
        caption.axis("off")
        caption.text(0.5, 0.5, "reference − method\n(colour scale −1 … 1)", ha="center", va="center", fontsize=8,
                     transform=caption.transAxes)
        for col, method in enumerate(methods, start=1):
            prediction = item.predictions.get(method)
            if prediction is None:
                continue
            ssim = _score_of(result, item, method, "ssim")
            psnr = _score_of(result, item, method, "psnr")
            axes = figure.add_subplot(grid[2 * row, col])
            axes.imshow(prediction, cmap="gray", vmin=0, vmax=1, aspect=aspect, interpolation="nearest")
            axes.set_title(f"{method_label(method, result.model_type)}\nSSIM {_format_number(ssim, 3)}, PSNR {_format_number(psnr, 1)}",
                           fontsize=8)
            diff_axes = figure.add_subplot(grid[2 * row + 1, col])
            difference_image = diff_axes.imshow(item.reference - prediction, cmap="RdBu_r", vmin=-1, vmax=1,
                                                aspect=aspect, interpolation="nearest")
        for axes in figure.axes:
            axes.set_xticks([])
            axes.set_yticks([])
    if difference_image is not None:
        figure.colorbar(difference_image, ax=figure.axes, shrink=0.4, label="reference − method")
    if not shown:
        figure.text(0.5, 0.5, "no slice to show", ha="center")
    figure.suptitle(f"{volume}: removed slices vs synthesized" + (" (thick slices simulated)" if result.settings.thick_slices else ""),
                    fontsize=10, y=0.99)
    return _save(figure, path, dpi=90)


def _score_of(result: EvaluationResult, item, method: str, metric: str) -> float:
    cols = result.columns
    for vol, k, m, index, value in zip(cols["volume"], cols["factor"], cols["method"], cols["slice_index"], cols[metric]):
        if vol == item.volume and k == item.factor and m == method and index == item.slice_index:
            return value
    return float("nan")


def safe_file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "volume"


def write_report(result: EvaluationResult, output_dir: "str | Path") -> dict[str, Path]:
    """Write scores.csv, summary.csv, summary.md, boxplots.png and montage_<volume>.png into ``output_dir``."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "scores": write_scores_csv(result, folder / "scores.csv"),
        "summary_csv": write_summary_csv(result, folder / "summary.csv"),
        "summary_md": _write_text(folder / "summary.md", summary_markdown(result)),
        "boxplots": plot_boxplots(result, folder / "boxplots.png"),
    }
    used = set()
    for volume in result.volumes:
        stem = safe_file_stem(volume)
        while stem in used:
            stem += "_"
        used.add(stem)
        files[f"montage:{volume}"] = plot_montage(result, volume, folder / f"montage_{stem}.png")
    return files
