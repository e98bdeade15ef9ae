"""The artifacts of one sweep: its tables and figures, written through the report's writer.

``grid_sections`` builds a grid sweep's tables (Table 6 / Table 1 layouts or the generic
unseen-pair table, the per-arm differences to each arm's reference row, retrieval, usage and
forgetting) and curves; ``search_sections`` an Optuna search's best trials (on validation), its
confirmation on test and the parameter importances. Every table reads test metrics; the
validation metrics only choose (the best arm of a curve, the search's best trial).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reports.build import Report

__all__ = ["grid_sections", "search_sections"]

DELTA_NOTE = "Each row: the arm minus its reference row, paired by seed (negative: arm worse)"


def grid_sections(plan, m, partial, w: Report, mv=None, mixed=None) -> list:
    """Tables and figures of a grid sweep: ``m`` its test metrics, ``mv`` its validation ones;
    ``mixed``: per variant, the code and data of its runs (a mixed sweep, --allow-mixed)."""
    from reports import sections, tables

    items: list = []
    sw = sections.slug(plan.sweep)
    rows = plan.rows
    common = {"rows": rows, "stages": plan.stages, "partial": partial, "mixed": mixed}
    pairs = plan.deltas()
    if plan.unseen and plan.kind in ("ablation", "methods"):
        number = "Table 6" if plan.kind == "ablation" else "Table 1"
        stem = f"{number.lower().replace(' ', '')}-{sw}"
        cols = sections.unseen_table_columns(plan, with_objective=False)
        a, b = plan.unseen
        title = f"Unseen pair {a}<->{b} (paper {number} layout), sweep {plan.sweep}"
    elif plan.unseen or "objective" in set(m["task"]):
        number, stem = "", f"unseen-{sw}"
        cols = sections.unseen_table_columns(plan, with_objective=True)
        title = f"Objective and unseen-pair metrics per variant, sweep {plan.sweep}"
    else:
        cols = []
    if cols:
        items.append(w.table(tables.grid_table(m, name=stem, title=title, columns=cols,
                                               notes=plan.notes, **common)))  # fmt: skip
    if cols and pairs:  # each arm minus the reference row its grid names, paired by seed
        title = f"{number or 'Per-arm'} differences to the reference row, sweep {plan.sweep}"
        t = tables.delta_table(m, name=f"{stem}-delta", title=title, pairs=pairs,
                               stages=plan.stages, columns=cols, partial=partial,
                               notes=[DELTA_NOTE, *plan.notes], mixed=mixed)  # fmt: skip
        items.append(w.table(t))
    if mv is not None and plan.curves:
        items += _chosen_on_validation(plan, m, mv)
    common["stages"] = sorted(int(s) for s in m["stage"].unique())  # retrieval: every stage
    for a, b, has_mean in plan.retrieval:
        number = sections.PAPER_RETRIEVAL.get((plan.kind, frozenset((a, b))))
        layout = f" (paper {number} layout)" if number else ""
        title = f"Zero-shot retrieval {a}<->{b}{layout}, sweep {plan.sweep}"
        cols = tables.retrieval_columns(a, b, has_mean)
        name = f"retrieval-{sw}-{sections.slug(a)}_{sections.slug(b)}"
        items.append(w.table(tables.grid_table(m, name=name, title=title, columns=cols, **common)))
    items += _curves(plan, m, w)
    items += _usage_and_forgetting(plan, m, rows, partial, w, mixed)
    return items


def _final_objective(metrics, stage: int):
    """Per variant: the objective of every seed at ``stage``."""
    obj = metrics[(metrics["task"] == "objective") & (metrics["stage"] == stage)]
    return {v: g["value"].dropna().tolist() for v, g in obj.groupby("variant", observed=True)}


def _chosen_on_validation(plan, m, mv) -> list[str]:
    """The best arm of a swept axis chosen on the validation objective, reported on test."""
    from reports.stats import summarize

    stage = max(plan.stages)
    val, test = _final_objective(mv, stage), _final_objective(m, stage)
    means = {v: summarize(x).mean for v, x in val.items() if x}
    if not means:
        return []
    best = max(means, key=means.get)
    t = summarize(test.get(best, []))
    return [f"Chosen on validation, reported on test: the best arm by the validation objective "
            f"after stage {stage} is {plan.titles.get(best, best)} (validation {means[best]:.2f}, "
            f"n={summarize(val[best]).n}); its test objective is {t.mean:.2f} \u00b1 "
            f"{t.std:.2f} (n={t.n})."]  # fmt: skip


def _curves(plan, m, w: Report) -> list:
    import pandas as pd

    from reports import plots, sections, tables

    items: list = []
    cols = sections.unseen_table_columns(plan, with_objective=True)
    frames = tables.seed_values(m, cols)
    firsts = m.drop_duplicates("variant").set_index("variant")
    targets = [("objective", sections.OBJECTIVE, "test objective")]  # curves report test
    if plan.unseen:  # the Table-6 average of the unseen-pair metrics
        targets.append(("unseen_avg", cols[-1], "test unseen-pair Avg. (Table 6)"))
    for x, hue in plan.curves:
        for metric, col, ylabel in targets:
            recs = []
            for (variant, stage), g in frames.items():
                if stage not in plan.stages:
                    continue
                series = g[tables.AVG_KEY] if col.key is None else g[col.key]
                for seed, value in series.dropna().items():
                    rec = {x: firsts.at[variant, x], "stage": stage, "seed": seed, "value": value}
                    if hue:
                        rec[hue] = firsts.at[variant, hue]
                    recs.append(rec)
            if not recs:
                continue
            name = f"curve-{sections.slug(plan.sweep)}-{x}-{metric}"
            xlabel = sections.CURVE_AXES[x]
            title = f"{ylabel} vs {xlabel}, sweep {plan.sweep} (mean, 95 % CI over seeds)"
            fig = plots.curve_figure(pd.DataFrame(recs), x=x, xlabel=xlabel, ylabel=ylabel,
                                     hue=hue)  # fmt: skip
            items.append(w.figure(fig, name, title))
    return items


def _usage_and_forgetting(plan, m, rows, partial, w: Report, mixed=None) -> list:
    import pandas as pd

    from reports import plots, sections, tables

    items: list = []
    sw = sections.slug(plan.sweep)
    usage = m[(m["task"] == "usage") & (m["pair"] == "") & m["metric"].str.startswith("codes_")]
    if not usage.empty:
        stages = sorted(int(s) for s in usage["stage"].unique())
        title = f"Codebook usage: codes per number of modalities (paper Fig. 3), sweep {plan.sweep}"
        per_seed = usage.groupby(["variant", "stage", "metric", "seed"], observed=True)["value"]
        data = per_seed.mean().reset_index()
        data["variant"] = pd.Categorical(data["variant"], plan.variants)
        data = data.sort_values("variant")
        data["variant"] = data["variant"].astype(str)
        items.append(w.figure(plots.usage_figure(data), f"usage-{sw}", title))
        items.append(w.table(tables.grid_table(m, name=f"usage-{sw}", title=title, rows=rows,
                                          stages=stages, columns=sections.USAGE_COLUMNS,
                                          partial=partial, digits=1, mixed=mixed)))  # fmt: skip
    mat = sections.forgetting_matrix(m, plan.variants)
    if mat is not None:
        title = (
            f"Retrieval mean R@1/5/10 (%) on each stage's pair after each stage, sweep {plan.sweep}"
        )
        fig = plots.forgetting_figure(mat, label="retrieval mean (%)")
        items.append(w.figure(fig, f"forgetting-{sw}", title))
        pairs = list(dict.fromkeys(p for v in plan.variants for _, p in sections.stage_pairs(m, v)))
        cols = [tables.Column(("retrieval", p, "mean"), (p,), in_avg=False) for p in pairs]
        all_stages = sorted(int(s) for s in m["stage"].unique())
        items.append(w.table(tables.grid_table(
            m, name=f"forgetting-{sw}", title=title, rows=rows, stages=all_stages, columns=cols,
            partial=partial, notes=["Values before a pair's own stage are zero-shot."], mixed=mixed,
        )))  # fmt: skip
    fg = m[m["task"] == "forgetting"]
    if not fg.empty:
        keys = fg[["pair", "metric"]].drop_duplicates().sort_values(["pair", "metric"]).values
        cols = [tables.Column(("forgetting", p, k), (p or "all", k), in_avg=False) for p, k in keys]
        items.append(w.table(tables.grid_table(
            m, name=f"forgetting-rows-{sw}", title=f"Forgetting (recorded), sweep {plan.sweep}",
            rows=rows, stages=sorted(int(s) for s in fg["stage"].unique()), columns=cols,
            partial=partial, mixed=mixed)))  # fmt: skip
    return items


def search_sections(plan, m, r, w: Report, confirm=None, confirm_mixed=None) -> list:
    """An Optuna search: ``m`` its validation metrics (what it chose on), ``confirm`` the test
    metrics of its confirmation sweep (the best configuration on new seeds), if any, and
    ``confirm_mixed`` the code and data of that sweep's runs when they differ (--allow-mixed)."""
    from reports import plots, search, tables
    from reports.checks import expected_stages
    from reports.sections import slug, unseen_table_columns

    sw = slug(plan.sweep)
    final = expected_stages(m, r)
    trials = search.search_trials(m, r, final)
    if trials.empty:
        return [f"Optuna search {plan.sweep}: no trial finished stage {final}."]
    on = sorted({str(x) for x in r.get("selected_on", []) if isinstance(x, str) and x})
    items: list = []
    if any(not x.startswith("val/") for x in on):
        items.append(f"WARNING: search {plan.sweep} optimised a test metric ({', '.join(on)}, "
                     "--select-on-test): its choice has seen test data.")  # fmt: skip
    title = f"Best 5 search trials (validation objective after stage {final}), sweep {plan.sweep}"
    items.append(w.table(search.top_table(trials, name=f"search-{sw}-best", title=title)))
    if confirm is not None and not confirm.empty:
        seeds = confirm["seed"].nunique()
        items.append(
            f"Chosen on validation (sweep {plan.sweep}), reported on test: the best "
            f"configuration rerun on {seeds} new seeds (sweep {plan.sweep}-confirm)."
        )
        cols = unseen_table_columns(plan, with_objective=True)
        stages = sorted(int(s) for s in confirm["stage"].unique())
        items.append(w.table(tables.grid_table(
            confirm, name=f"search-{sw}-confirmed", rows=[("search-best", "best (confirmed)")],
            title=f"The search's best configuration on test, {seeds} seeds, sweep "
                  f"{plan.sweep}-confirm", stages=stages, columns=cols, partial={},
            mixed=confirm_mixed)))  # fmt: skip
    imps, note = search.importances(trials)
    if imps is None:
        items.append(f"Parameter importances, sweep {plan.sweep}: {note}.")
    else:
        title = f"Parameter importances, sweep {plan.sweep}"
        items.append(w.table(search.importance_table(imps, name=f"search-{sw}-importance",
                                                title=title, note=note)))  # fmt: skip
        items.append(w.figure(plots.importance_figure(imps),
                              f"search-{sw}-importance", title))  # fmt: skip
    params = [p for p in search.SEARCHED if trials[p].map(search.is_number).all()]
    if params and len(trials) >= 2:
        split = "validation" if set(m["split"]) == {"val"} else "test"  # what it chose on
        title = f"Search trials: {split} objective vs searched parameters, sweep {plan.sweep}"
        fig = plots.search_figure(trials, params, ylabel=f"{split} objective (final stage)")
        items.append(w.figure(fig, f"search-{sw}-params", title))
    return items
