"""The report's figures, each saved as PNG and SVG under report/figures/.

Matplotlib is used through ``matplotlib.figure.Figure`` (the Agg canvas), never pyplot, so
building a report neither opens windows nor changes a global backend. SVGs carry no date and a
fixed id salt, so the same results give the same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from jaxalign.files import atomic_write
from jaxalign.report.load import DEFAULT_CONVENTION, Rows
from jaxalign.report.stats import CORRECT, INCORRECT, SHARED
from jaxalign.report.tables import MAIN_ALGORITHM, REFERENCE, Table, oracle_curve, select

COLORS = {"correct": "#1b7837", "incorrect": "#b2182b", "accent": "#2166ac", "muted": "#8c8c8c"}
PALETTE = ("#2166ac", "#b2182b", "#1b7837", "#762a83", "#e08214", "#35978f", "#8c510a", "#c51b7d", "#4d4d4d")


def _figure(width: float = 6.4, height: float = 4.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    return fig


def save(fig, out_dir: Path, name: str) -> list[Path]:
    """Writes ``name``.png and ``name``.svg atomically; returns the two paths."""
    import matplotlib

    paths = []
    with matplotlib.rc_context({"svg.hashsalt": "jaxalign", "svg.fonttype": "none"}):
        for ext, metadata in (("png", None), ("svg", {"Date": None})):
            path = out_dir / f"{name}.{ext}"
            atomic_write(path, lambda p: fig.savefig(p, format=ext, metadata=metadata))
            paths.append(path)
    return paths


def _main(rows: Rows) -> Rows:
    sel = select(rows, None, MAIN_ALGORITHM, DEFAULT_CONVENTION)
    return sel.where(sel["valid"] & ~sel.is_("teacher", REFERENCE))


def teacher_ranking(ranking: Table, title: str):
    """Mean alignment per teacher with its 95% CI (Table 1, main algorithm, all |S_u|)."""
    data = [r for r in ranking.where(algorithm=MAIN_ALGORITHM, convention=DEFAULT_CONVENTION, s_u="all").rows
            if np.isfinite(r["mean_cosine"].value)]
    if not data:
        return None
    data = sorted(data, key=lambda r: r["mean_cosine"].value)
    fig = _figure(6.4, 1.2 + 0.4 * len(data))
    ax = fig.add_subplot()
    y = np.arange(len(data))
    est = [r["mean_cosine"] for r in data]
    value = np.array([e.value for e in est])
    low = np.array([e.low if np.isfinite(e.low) else e.value for e in est])
    high = np.array([e.high if np.isfinite(e.high) else e.value for e in est])
    ax.errorbar(value, y, xerr=[value - low, high - value], fmt="o", color=COLORS["accent"], capsize=3)
    ax.axvline(0, color=COLORS["muted"], lw=0.8)
    ax.set_yticks(y, [f"{r['teacher']} (n={r['n_nodes']})" for r in data])
    ax.set_xlabel(f"mean cosine ({MAIN_ALGORITHM}) with 95% CI across questions")
    ax.set_title(title, fontsize=10)
    return fig


def correct_vs_incorrect(rows: Rows, by_teacher: Table):
    """Left: the cosine distribution on correct vs incorrect nodes. Right: per-teacher means."""
    sel = _main(rows)
    sel = sel.where(sel["first"] & (sel["split"] != SHARED))
    if not len(sel):
        return None
    fig = _figure(9.6, 4.0)
    left, right = fig.subplots(1, 2)
    bins = np.linspace(-1, 1, 21)
    for name, code in (("correct", CORRECT), ("incorrect", INCORRECT)):
        values = sel["cosine"][sel["split"] == code]
        if len(values):
            left.hist(values, bins=bins, density=True, histtype="step", lw=1.8, color=COLORS[name],
                      label=f"{name} (n={len(values)}, mean {values.mean():+.3f})")
    left.set_xlabel(f"cosine ({MAIN_ALGORITHM}), shared nodes excluded")
    left.set_ylabel("density")
    left.legend(fontsize=8, loc="upper left")
    data = by_teacher.where(algorithm=MAIN_ALGORITHM, convention=DEFAULT_CONVENTION, s_u="all",
                            metric="mean cosine").rows
    y = np.arange(len(data))
    right.scatter([r["correct"] for r in data], y, color=COLORS["correct"], label="correct", zorder=3)
    right.scatter([r["incorrect"] for r in data], y, color=COLORS["incorrect"], label="incorrect", zorder=3)
    for i, r in enumerate(data):
        right.plot([r["correct"], r["incorrect"]], [i, i], color=COLORS["muted"], lw=1)
    right.axvline(0, color=COLORS["muted"], lw=0.8)
    right.set_yticks(y, [r["teacher"] for r in data])
    right.set_xlabel("mean cosine per teacher")
    right.legend(fontsize=8)
    return fig


def path_oscillation(rows: Rows, teachers: list[str], max_paths: int = 4, max_teachers: int = 6):
    """The cosine along each path of the question with the most decision nodes: a panel per path,
    a line per teacher (the top ``max_teachers`` of the ranking)."""
    from matplotlib.ticker import MaxNLocator

    sel = _main(rows)
    if not len(sel):
        return None
    qid = int(np.bincount(sel["qid"]).argmax())
    sel = sel.where(sel["qid"] == qid)
    paths = np.unique(sel["path"])[:max_paths]
    fig = _figure(9.6, 2.2 + 1.6 * ((len(paths) + 1) // 2))
    axes = np.atleast_1d(fig.subplots((len(paths) + 1) // 2, min(len(paths), 2), sharey=True, squeeze=False)).ravel()
    for ax, path in zip(axes, paths):
        on_path = sel.where(sel["path"] == path)
        for i, teacher in enumerate(teachers[:max_teachers]):
            p = on_path.where(on_path.is_("teacher", teacher))
            order = np.argsort(p["depth"])
            ax.plot(p["depth"][order], p["cosine"][order], marker="o", ms=3.5, lw=1.1,
                    color=PALETTE[i % len(PALETTE)], label=teacher)
        outcome = "correct" if on_path["correct"][0] else "incorrect"
        ax.axhline(0, color=COLORS["muted"], lw=0.8)
        ax.set_ylim(-1.08, 1.08)
        ax.set_title(f"path {path} ({outcome})", fontsize=9, color=COLORS[outcome])
        ax.set_xlabel("depth (token position)", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[len(paths):]:
        ax.set_visible(False)
    axes[0].set_ylabel(f"cosine ({MAIN_ALGORITHM})")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"alignment along the paths of {rows.labels['qid'][qid]} (decision nodes only)", fontsize=10)
    return fig


def alignment_histogram(rows: Rows):
    """All decision nodes' cosines, |S_u| = 2 (a sign, exactly +-1 when renormalised) apart from >= 3."""
    sel = _main(rows)
    sel = sel.where(sel["first"])
    if not len(sel):
        return None
    fig = _figure()
    ax = fig.add_subplot()
    two = sel["s_u_size"] == 2
    ax.hist([sel["cosine"][~two], sel["cosine"][two]], bins=np.linspace(-1, 1, 41), stacked=True,
            color=[COLORS["accent"], COLORS["muted"]], label=[f"|S_u| ≥ 3 (n={int((~two).sum())})",
                                                                f"|S_u| = 2 (n={int(two.sum())})"])
    ax.axvline(sel["cosine"].mean(), color="black", lw=1, ls="--", label=f"mean {sel['cosine'].mean():+.3f}")
    ax.set_xlabel(f"cosine ({MAIN_ALGORITHM}), every teacher's decision nodes")
    ax.set_ylabel("nodes")
    ax.legend(fontsize=8)
    return fig


def oracle(rows: Rows):
    """Mean signal of the kept nodes against the share of tokens kept, sweeping the cosine threshold."""
    curves = oracle_curve(rows)
    if not curves:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for i, (teacher, (frac, signal)) in enumerate(sorted(curves.items())):
        ok = np.isfinite(signal)
        ax.plot(100 * frac[ok], signal[ok], lw=1.5, color=PALETTE[i % len(PALETTE)], label=teacher)
    ax.axhline(0, color=COLORS["muted"], lw=0.8)
    ax.set_xlabel("% of decision nodes kept (cosine > t, t from −1 to 0.95)")
    ax.set_ylabel("mean signal of kept nodes (SR range × cosine)")
    ax.set_title("selective distillation (oracle)", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def write_figures(rows: Rows, tables: dict[str, Table], out_dir: Path, title: str) -> list[str]:
    """Builds every figure of a run's report into ``out_dir``; returns the names written."""
    ranking = tables["t1_teacher_ranking"]
    ranked = [r["teacher"] for r in ranking.where(algorithm=MAIN_ALGORITHM, convention=DEFAULT_CONVENTION,
                                                 s_u="all").rows if r["teacher"] != REFERENCE]
    figures = {
        "teacher_ranking": teacher_ranking(ranking, title),
        "correct_vs_incorrect": correct_vs_incorrect(rows, tables["t6_correct_vs_incorrect_by_teacher"]),
        "path_oscillation": path_oscillation(rows, ranked),
        "alignment_histogram": alignment_histogram(rows),
        "oracle_curve": oracle(rows),
    }
    written = []
    for name, fig in figures.items():
        if fig is not None:
            save(fig, out_dir, name)
            written.append(name)
    return written


def sweep_ranking(panels: list[tuple[str, Table]], out_dir: Path) -> Optional[str]:
    """One teacher-ranking panel per run of a sweep, side by side with a shared x axis."""
    panels = [(name, t) for name, t in panels
              if t.where(algorithm=MAIN_ALGORITHM, convention=DEFAULT_CONVENTION, s_u="all").rows]
    if not panels:
        return None
    fig = _figure(3.6 * len(panels), 4.0)
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharex=True))
    for ax, (name, table) in zip(axes, panels):
        data = sorted(table.where(algorithm=MAIN_ALGORITHM, convention=DEFAULT_CONVENTION, s_u="all").rows,
                      key=lambda r: np.nan_to_num(r["mean_cosine"].value))
        value = np.array([r["mean_cosine"].value for r in data])
        low = np.array([np.nan_to_num(r["mean_cosine"].low, nan=v) for r, v in zip(data, value)])
        high = np.array([np.nan_to_num(r["mean_cosine"].high, nan=v) for r, v in zip(data, value)])
        y = np.arange(len(data))
        ax.errorbar(value, y, xerr=[value - low, high - value], fmt="o", color=COLORS["accent"], capsize=3)
        ax.axvline(0, color=COLORS["muted"], lw=0.8)
        ax.set_yticks(y, [r["teacher"] for r in data], fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"mean cosine ({MAIN_ALGORITHM})")
    save(fig, out_dir, "sweep_teacher_ranking")
    return "sweep_teacher_ranking"
