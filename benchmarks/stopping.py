"""Diagnosis: which early-stopping metric gives the refit the rounds the future needs?

    python benchmarks/stopping.py --work /work/refit12/annual-30000 --future 2026-06-01

Reads a ``benchmarks/refit.py`` work folder (its cached snapshots and the generator's truth),
takes the refit's rows as ``lapse train`` would have on the day ``--future`` (``refit_rows``,
the default settings) and fits LightGBM with the search's first trial three ways: early stopping
on the stop rows' ROC AUC, on their log loss, and a fixed number of rounds. Each is scored on
the future day's subscribers (ROC AUC, ``oracle_ratio``). The fixed-round lines *peek at the
future*: they show how many rounds it wanted, which no stopping rule can know; the reference
measured in the same run is the AUC-stopped fit (the rule before
``training.early_stopping_metric``).
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path

# run as a script, this file's folder comes first on sys.path; keep the repo's packages visible
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a benchmarks/refit.py folder")
    parser.add_argument("--future", required=True, help="a labelled cut-off, e.g. 2026-06-01")
    parser.add_argument("--rounds", default="100,200,400,800", help="fixed rounds to compare")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd

    from features import schema
    from features.build import feature_registry
    from training.evaluate import join_truth, oracle_ratio, score_metrics
    from training.pipeline import classifier, feature_types, fit_classifier, preprocessor
    from training.settings import TrainConfig
    from training.splits import refit_rows, time_split
    from training.train import constant_features, load_truth, split_xy
    from training.tune import first_trial

    t = TrainConfig().training
    horizon = TrainConfig().labels.horizon_days
    future = pd.Timestamp(args.future, tz="UTC")
    frame = pd.read_parquet(args.work / "snapshots.parquet")
    truth = load_truth(args.work / "synthetic" / "truth" / "churn_truth.parquet", horizon)
    labelled = frame[frame[schema.CHURNED].notna()]
    as_of = labelled.index.get_level_values(schema.AS_OF)
    if future not in set(as_of):
        raise SystemExit(f"--future {args.future}: not a labelled cut-off of {args.work}")
    known = labelled[as_of + timedelta(days=horizon) <= future]
    cutoffs = known.index.get_level_values(schema.AS_OF).unique()
    parts = refit_rows(
        known,
        time_split(cutoffs, horizon, t.valid_cutoffs, t.valid_reach),
        t.valid_share,
        t.seed,
        t.min_churners,
    )

    (X, y), (Xs, ys), (Xf, yf) = (
        split_xy(parts["train"]),
        split_xy(parts["stop"]),
        split_xy(labelled[as_of == future]),
    )
    dropped = constant_features(X)
    X, Xs, Xf = (f.drop(columns=dropped) for f in (X, Xs, Xf))
    oracle = join_truth(Xf.index, truth).to_numpy(dtype=float)
    known_rows = np.isfinite(oracle)
    yk = yf.to_numpy()[known_rows]
    oracle_auc = score_metrics(yk, oracle[known_rows], "o")["o_roc_auc"]
    pre = preprocessor(feature_types(X, feature_registry())).fit(X, y)
    Xt, Xst, Xft = pre.transform(X), pre.transform(Xs), pre.transform(Xf)
    params = first_trial(len(y))
    print(
        f"{args.work.name}, future {future.date()}: train {len(y):,} rows ({int(y.sum()):,} "
        f"churners), stop {len(ys):,} ({int(ys.sum()):,}), future {len(yf):,} "
        f"({int(yf.sum()):,}); oracle ROC AUC {oracle_auc:.4f}; first trial {params}"
    )

    def line(name: str, clf) -> None:
        p = clf.predict_proba(Xft)[:, 1][known_rows]
        auc = score_metrics(yk, p, "m")["m_roc_auc"]
        rounds = clf.best_iteration_ or clf.n_estimators
        print(f"  {name:<28} {rounds:>5} rounds  future ROC AUC {auc:.4f}  "
              f"oracle_ratio {oracle_ratio(auc, oracle_auc):.4f}", flush=True)  # fmt: skip

    for metric in ("auc", "binary_logloss"):
        clf = fit_classifier(
            classifier(params, t.seed),
            Xt,
            y,
            Xst,
            ys,
            early_stopping_rounds=t.early_stopping_rounds,
            early_stopping_metric=metric,
        )
        line(f"stopped on {metric}", clf)
    for rounds in (int(r) for r in args.rounds.split(",")):
        clf = classifier(params, t.seed).set_params(n_estimators=rounds).fit(Xt, y.to_numpy())
        line("fixed (peeks at the future)", clf)


if __name__ == "__main__":
    main()
