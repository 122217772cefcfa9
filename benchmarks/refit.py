"""Benchmark: does the production refit (``training.refit``, issue 16) predict the future better
than the time-split model it comes from? Both from the same run, judged on a later cut-off.

    python benchmarks/refit.py                          # 20,000 users, 180 days, 3 futures
    python benchmarks/refit.py --users 8000 --futures 2 --trials 5 --work DIR
    python benchmarks/refit.py --shape no-trials --set training.valid_until=labels_end --work DIR

A backtest in miniature: generate an app of ``--days`` days, build its snapshots once (each
cut-off sees only its past), then for each of the last ``--futures`` labelled cut-offs F train as
``lapse train`` would have on the day F, with only the cut-offs whose labels were complete then
(c + horizon <= F). One ``train_snapshots`` run gives both models: the time-split model (trained
before that run's hold-out, which it reports) and the refit (every complete cut-off, the hold-out
included, calibrated on the latest). Both score F's subscribers, whose labels neither saw: ROC-AUC,
PR-AUC, Brier and ECE, the paired refit - time-split difference with a 95% bootstrap interval
(the reference measured in the same run is the time-split model), and oracle_ratio against the
generator's exact churn probability. The strong baseline is refitted the same way (the tuned
logistic regression on the refit's training rows, ``C`` chosen on its calibration rows), and the
registered model's PR-AUC margin over it on F is reported with a paired interval: issue 12's
"registered model >= the strong baseline", judged on the day after training.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

# run as a script, this file's folder comes first on sys.path; keep the repo's packages visible
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METRICS = ("roc_auc", "pr_auc", "brier", "ece")


def paired(y, a, b, resamples: int, seed: int) -> dict[str, list[float]]:
    """b - a for each metric: the point value and a 95% percentile interval over resamples."""
    import numpy as np

    from training.evaluate import score_metrics

    def diff(idx) -> dict[str, float]:
        ma, mb = score_metrics(y[idx], a[idx], "m"), score_metrics(y[idx], b[idx], "m")
        return {k: mb[f"m_{k}"] - ma[f"m_{k}"] for k in METRICS}

    rng = np.random.default_rng(seed)
    point = diff(np.arange(len(y)))
    draws = [diff(rng.integers(0, len(y), len(y))) for _ in range(resamples)]
    return {
        k: [point[k], *np.percentile([d[k] for d in draws], [2.5, 97.5]).tolist()] for k in METRICS
    }


def ratio_interval(y, p, oracle, resamples: int, seed: int) -> list[float]:
    """``oracle_ratio`` of scores ``p`` on the rows the oracle knows: the point value and a 95%
    percentile interval over resamples of those rows (a few hundred churners move it by
    +-0.03)."""
    import numpy as np

    from training.evaluate import oracle_ratio, score_metrics

    known = np.flatnonzero(np.isfinite(oracle))
    y, p, oracle = y[known], p[known], oracle[known]

    def ratio(idx) -> float:
        if y[idx].min() == y[idx].max():
            return float("nan")
        auc = score_metrics(y[idx], p[idx], "m")["m_roc_auc"]
        return oracle_ratio(auc, score_metrics(y[idx], oracle[idx], "o")["o_roc_auc"])

    rng = np.random.default_rng(seed)
    draws = [ratio(rng.integers(0, len(y), len(y))) for _ in range(resamples)]
    return [ratio(np.arange(len(y))), *np.nanpercentile(draws, [2.5, 97.5]).tolist()]


def refit_logreg(known, run, result):
    """The tuned logistic regression fitted as the refit is (``refit_rows``: every cut-off with
    complete labels, the held-out subscribers apart), ``C`` chosen on the refit's calibration
    rows, on the features the run kept."""
    from features.build import feature_registry
    from training.evaluate import tuned_logreg
    from training.pipeline import feature_types
    from training.splits import refit_rows
    from training.train import split_xy

    t = run.training
    parts = refit_rows(known, result.split, t.valid_share, t.seed, t.min_churners)
    dropped = list(result.dropped_features)
    (X, y), (Xc, yc) = (split_xy(parts[n]) for n in ("train", "calibrate"))
    X, Xc = X.drop(columns=dropped), Xc.drop(columns=dropped)
    types = feature_types(X, feature_registry(run.definition))
    return tuned_logreg(types, t.seed, X, y, Xc, yc)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--shape", default="default")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--futures", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--work", type=Path, help="folder kept between runs (snapshots cached)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="change a training setting for the run, e.g. training.valid_until=labels_end",
    )
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    import numpy as np
    import optuna
    import pandas as pd

    from benchmarks.shapes import overrides, prepare_app, throwaway_config
    from features import schema
    from training.evaluate import join_truth, score_metrics
    from training.train import train_snapshots

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    work = args.work or Path(tempfile.mkdtemp(prefix="lapse-bench-refit-"))
    work.mkdir(parents=True, exist_ok=True)
    config = throwaway_config(work, "refit", args.trials, overrides(args.set))
    frame, truth, config = prepare_app(
        args.shape, args.users, args.seed, work, config, days=args.days
    )
    horizon = timedelta(days=config.labels.horizon_days)
    labelled = frame[frame[schema.CHURNED].notna()]
    as_of = labelled.index.get_level_values(schema.AS_OF)
    futures = sorted(as_of.unique())[-args.futures :]
    print(
        f"{args.shape} app: {args.users:,} users, {args.days} days, {len(labelled):,} labelled "
        f"rows at {as_of.nunique()} cut-offs; futures {', '.join(str(f.date()) for f in futures)}"
        + "".join(f"; {pair}" for pair in args.set)
    )
    header = (
        f"{'future':<11} {'trained to':<11} {'rows':>6} {'churn':>6}  "
        + "  ".join(f"{m:>20}" for m in ("ROC-AUC split/refit", "PR-AUC split/refit"))
        + f"  {'ECE split/refit':>16}  oracle_ratio split / refit (95%)"
    )
    lines, diffs, margins = [header], [], []
    for future in futures:
        known = labelled[as_of + horizon <= future]  # what a run on the day `future` could use
        run = config.replace(training={"refit": True})
        result = train_snapshots(known, run, truth)
        rows = labelled[as_of == future]
        X, y = rows.drop(columns=schema.CHURNED), rows[schema.CHURNED].astype(int).to_numpy()
        split_p = result.evaluation_model.predict_proba(X)[:, 1]
        refit_p = result.model.predict_proba(X)[:, 1]
        logreg_p = refit_logreg(known, run, result).predict_proba(X)[:, 1]
        ms, mr = score_metrics(y, split_p, "m"), score_metrics(y, refit_p, "m")
        oracle = join_truth(X.index, truth).to_numpy(dtype=float)
        ratios = [
            ratio_interval(y, p, oracle, args.resamples, args.seed) for p in (split_p, refit_p)
        ]
        diffs.append(paired(y, split_p, refit_p, args.resamples, args.seed))
        margins.append(paired(y, logreg_p, refit_p, args.resamples, args.seed))
        trained_to = max(known.index.get_level_values(schema.AS_OF))
        lines.append(
            f"{str(future.date()):<11} {str(trained_to.date()):<11} {len(y):>6,} {y.mean():>6.1%}  "
            + "  ".join(f"{ms[f'm_{k}']:>9.4f} / {mr[f'm_{k}']:<8.4f}" for k in METRICS[:2])
            + f"  {ms['m_ece']:>7.4f} / {mr['m_ece']:<6.4f}  "
            + " / ".join(f"{r[0]:.3f} [{r[1]:.3f}, {r[2]:.3f}]" for r in ratios)
        )
        print(lines[-1], flush=True)
    print("\n".join(["", *lines]))
    print("\nrefit - time-split model, paired bootstrap (95%), per future cut-off:")
    for future, d in zip(futures, diffs, strict=True):
        parts = [f"{k} {v[0]:+.4f} [{v[1]:+.4f}, {v[2]:+.4f}]" for k, v in d.items()]
        print(f"  {future.date()}: " + "; ".join(parts))
    mean = {k: float(np.mean([d[k][0] for d in diffs])) for k in METRICS}
    print("  mean: " + "; ".join(f"{k} {v:+.4f}" for k, v in mean.items()))
    print("\nregistered (refit) - refitted logistic regression, paired bootstrap (95%):")
    for future, d in zip(futures, margins, strict=True):
        parts = [f"{k} {v[0]:+.4f} [{v[1]:+.4f}, {v[2]:+.4f}]" for k, v in d.items()]
        print(f"  {future.date()}: " + "; ".join(parts))
    print(f"work folder: {work}")
    table = [
        {"future": str(f.date()), **{k: d[k][0] for k in METRICS}}
        for f, d in zip(futures, diffs, strict=True)
    ]
    pd.DataFrame(table).to_csv(work / "refit-diffs.csv", index=False)


if __name__ == "__main__":
    main()
