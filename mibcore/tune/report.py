"""The outputs of a study, written atomically to OUT by each worker at its end (the last one's
stay; each reads the whole study):

  results.md / results.csv  the trials, best first: the objective's mean +- sample std (n - 1)
                            over seeds, the parameters, the state (complete, pruned, failed)
  importance.csv            each parameter's importance over the complete trials: Optuna's
                            fANOVA where scikit-learn is installed, else its PED-ANOVA (named)
  tune.png                  the objective per trial (best so far as a line) and the importances
                            (where matplotlib is installed)
  best.yaml                 the best trial's config: `mibcore train --config OUT/best.yaml`
                            reruns it (its first seed; --seeds for all of them)
"""
import csv
import dataclasses
import io
import math
import os

from mibcore._io import atomic_write, atomic_write_text
from mibcore._optional import available
from mibcore.train.config import dump_config
from mibcore.train.report import seed_summary
from mibcore.tune.space import field_values

RESULTS_MD, RESULTS_CSV, IMPORTANCE_CSV, PLOT, BEST_CONFIG = (
    "results.md", "results.csv", "importance.csv", "tune.png", "best.yaml")
TOP = 10  # trials in results.md (results.csv has all)


def write(optuna, study, out, base, space, seeds):
    """Writes the outputs; returns the summary the CLI prints (JSON)."""
    state = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    complete = sorted((t for t in trials if t.state == state.COMPLETE), key=lambda t: (t.value, t.number))
    label = complete[0].user_attrs["objective"] if complete else "objective"
    counts = {_state(s): sum(t.state == s for t in trials) for s in state if any(t.state == s for t in trials)}
    method, importance, why = _importance(optuna, study, len(complete))
    params = list(space)
    table = [_row(t, params) for t in complete] + [_row(t, params) for t in trials if t.state != state.COMPLETE]
    atomic_write_text(os.path.join(out, RESULTS_CSV), _csv(
        ["trial", "state", "objective", "mean", "sample_std", "n"] + params,
        [[r["trial"], r["state"], label, r["mean"], r["std"], r["n"]] + r["params"] for r in table]))
    atomic_write_text(os.path.join(out, IMPORTANCE_CSV), _csv(
        ["param", "importance", "method"], [[k, v, method] for k, v in importance.items()]))
    plotted = _plot(out, complete, importance, label, method)
    best = None
    if complete:
        best = dict(_row(complete[0], params), params=field_values(complete[0].params))
        _write_best(out, study, base, best, label, seeds)
    notes = [] if plotted else [f"no {PLOT}: matplotlib is not installed (pip install 'mibcore[plot]')"]
    md = _markdown(study, base.seed, out, table[:TOP], params, label, counts, method, importance, why, best, seeds,
                   notes)
    atomic_write_text(os.path.join(out, RESULTS_MD), md)
    return {"study": study.study_name, "trials": counts, "objective": label,
            "best": best and {k: _json_number(best[k]) for k in ("trial", "mean", "std", "n", "params")},
            "best_config": best and os.path.join(out, BEST_CONFIG), "importance": importance,
            "importance_method": method, "notes": notes}


def _json_number(value):
    return None if isinstance(value, float) and math.isnan(value) else value  # (the std of one seed)


def _row(trial, params):
    """A trial's table row: the objective's mean and sample std over its seeds (None where it did
    not complete), and its parameters."""
    scores = trial.user_attrs.get("dev_scores")
    mean = std = None
    if trial.value is not None and scores:
        [(_, mean, std)] = seed_summary([{"objective": s} for s in scores])
    values = field_values(trial.params)
    return {"trial": trial.number, "state": _state(trial.state), "mean": mean, "std": std,
            "n": len(scores) if scores else 0, "params": [_text(values.get(p, "")) for p in params]}


def _state(state):
    """complete, pruned, failed, running or waiting."""
    return "failed" if state.name == "FAIL" else state.name.lower()


def _text(value):
    return "+".join(value) if isinstance(value, tuple) else value


def _csv(header, rows):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    return buf.getvalue()


def _importance(optuna, study, n_complete):
    """(method, {param: importance} summing to 1, why empty)."""
    if available("sklearn"):
        evaluator, method = optuna.importance.FanovaImportanceEvaluator(seed=0), "fANOVA"
    else:
        evaluator, method = optuna.importance.PedAnovaImportanceEvaluator(), "PED-ANOVA"
    if n_complete < 2:
        return method, {}, "it needs at least 2 complete trials"
    try:
        values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError) as e:
        return method, {}, str(e).splitlines()[0]
    values = {k: float(v) for k, v in values.items() if math.isfinite(v)}
    return method, values, None if values else "every complete trial has the same objective"


def _plot(out, complete, importance, label, method):
    """tune.png; False where matplotlib is not installed."""
    if not available("matplotlib"):
        return False
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)  # (no pyplot: the process's backend untouched)
    trials_ax, importance_ax = fig.subplots(1, 2)
    done = sorted(complete, key=lambda t: t.number)
    numbers, values = [t.number for t in done], [t.value for t in done]
    trials_ax.plot(numbers, values, "o", label="complete trial")
    trials_ax.step(numbers, [min(values[: i + 1]) for i in range(len(values))], where="post", label="best so far")
    trials_ax.set(xlabel="trial", ylabel=f"{label} (lower is better)", title="objective per trial")
    trials_ax.legend(fontsize="small")
    trials_ax.grid(alpha=0.3)
    names = list(importance)[::-1]
    importance_ax.barh(names, [importance[n] for n in names])
    importance_ax.set(xlabel=f"importance ({method})", title="parameter importance")
    fig.tight_layout()
    atomic_write(os.path.join(out, PLOT), lambda tmp: fig.savefig(tmp, format="png"))
    return True


def _rerun(out, seeds):
    return f"mibcore train --config {os.path.join(out, BEST_CONFIG)}" + (
        f" --seeds {' '.join(map(str, seeds))}" if seeds and len(seeds) > 1 else "")


def _write_best(out, study, base, best, label, seeds):
    config = dataclasses.replace(base, **best["params"], out=os.path.join(out, "best"),
                                 seed=seeds[0] if seeds else base.seed)
    spread = f" +- {best['std']:.4f} (sample std over {best['n']} seeds)" if best["n"] > 1 else ""
    header = (f"# The best trial ({best['trial']}) of the mibcore tune study {study.study_name!r}: "
              f"{label} {best['mean']:.4f}{spread}.\n# Rerun: {_rerun(out, seeds)}\n")
    atomic_write_text(os.path.join(out, BEST_CONFIG), header + dump_config(config, "yaml"))


def _number(value):
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _markdown(study, base_seed, out, rows, params, label, counts, method, importance, why, best, seeds, notes):
    runs = (f"the mean over seeds {', '.join(map(str, seeds))}, +- the sample std (n - 1)" if seeds and len(seeds) > 1
            else f"one run per trial (seed {seeds[0] if seeds else base_seed})")
    md = [f"# mibcore tune: study {study.study_name!r}", "",
          "Trials: " + ", ".join(f"{n} {state}" for state, n in counts.items()) + ".",
          f"Objective: {label} at each run's best dev epoch (the rule that selects that epoch), minimized; "
          f"{runs}.", "",
          f"| trial | state | {label} mean | sample std | n | " + " | ".join(params) + " |",
          "| ---: | --- | ---: | ---: | ---: |" + " --- |" * len(params)]
    md += [f"| {r['trial']} | {r['state']} | {_number(r['mean'])} | {_number(r['std'])} | {r['n']} | "
           + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r["params"]) + " |" for r in rows]
    md += ["", f"(The best {TOP} trials, then the others; {RESULTS_CSV} has all.)", "",
           f"## Parameter importance ({method}, Optuna's, over the complete trials)", ""]
    if importance:
        md += ["| param | importance |", "| --- | ---: |"] + [f"| {k} | {v:.3f} |" for k, v in importance.items()]
    else:
        md += [f"Not computed: {why}."]
    md += [""]
    if best:
        md += [f"Best: trial {best['trial']}, {label} {_number(best['mean'])}. Rerun it: `{_rerun(out, seeds)}`"]
    return "\n".join(md + [f"Note: {n}." for n in notes]) + "\n"
