"""Benchmark (analysis): what keeps ``oracle_ratio`` below 0.95 on one generated app (issue 12).

    python benchmarks/oracle_gap.py --work /tmp/o12/s7/foreign          # a shapes.py --work app
    python benchmarks/oracle_gap.py --work DIR --no-grid                 # hidden drivers only

On the cached snapshots of an app that ``benchmarks/shapes.py --work`` prepared (the same rows,
the same time split, the same validation subscribers), two questions:

* **Would the features gain from seeing the hidden drivers?** The tuned logistic regression and
  LightGBM with the search's first trial (early stopping on validation) are fitted on the
  features, then on the features plus one or more of the generator's hidden per-subscriber
  drivers (``truth/subscribers.parquet``: the engagement level at the cut-off, its trend,
  intent, payment-failure logit, price sensitivity). A driver that adds hold-out AUC is one the
  events do not reveal; one that adds nothing is already seen. Analysis only: features never
  read the hidden state.
* **Could any tuning reach the target on these rows?** LightGBM over a grid of leaves, samples
  per leaf and feature fractions, each scored on the hold-out after 100 … 1,500 rounds: the best
  of them peeks at the hold-out, so it is a ceiling for tuning, not a result.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

# run as a script, this file's folder comes first on sys.path; keep the repo's packages visible
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(1, str(Path(__file__).resolve().parent))

HIDDEN_SETS = (
    ("h_eng",),
    ("h_eng", "h_trend"),
    ("h_pay",),
    ("h_intent",),
    ("h_sens",),
    ("h_intent", "h_pay"),
    ("h_eng", "h_trend", "h_intent", "h_pay", "h_sens"),
)
ROUNDS = (100, 200, 300, 450, 600, 800, 1100, 1500)


def hidden_drivers(index, subscribers):
    """The generator's hidden drivers of each snapshot row (user, platform, as_of): engagement
    at the cut-off (its level at install plus the trend per 30 days since the first purchase,
    clipped as the simulator does; the truth has no install day, a few days earlier), trend,
    intent, payment-failure logit, price sensitivity."""
    import numpy as np
    import pandas as pd

    from features import schema

    keys = [schema.USER_ID, schema.PLATFORM]
    rows = index.to_frame(index=False)
    subs = subscribers.copy()
    for key in keys:
        rows[key], subs[key] = rows[key].astype(str), subs[key].astype(str)
    joined = rows.merge(subs, on=keys, how="left")
    months = (
        pd.to_datetime(joined[schema.AS_OF], utc=True)
        - pd.to_datetime(joined["first_purchase_at"], utc=True)
    ).dt.days.clip(lower=0) / 30
    level = np.clip(joined["engagement0"] + joined["engagement_trend"] * months, -3.5, 1.5)
    return pd.DataFrame(
        {
            "h_eng": level.to_numpy(),
            "h_trend": joined["engagement_trend"].to_numpy(),
            "h_intent": joined["intent"].to_numpy(),
            "h_pay": joined["payment_failure_logit"].to_numpy(),
            "h_sens": joined["price_sensitivity"].to_numpy(),
        },
        index=index,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="one app's shapes.py folder")
    parser.add_argument("--no-hidden", action="store_true", help="skip the hidden drivers")
    parser.add_argument("--no-grid", action="store_true", help="skip the tuning ceiling")
    parser.add_argument("--leaves", default="4,8,16,31")
    parser.add_argument("--min-child-samples", default="20,100,300")
    parser.add_argument("--colsample", default="0.5,0.9")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    import shapes
    from sklearn.metrics import average_precision_score, roc_auc_score

    from features.build import feature_registry
    from training.evaluate import join_truth, oracle_ratio, tuned_logreg
    from training.pipeline import classifier, feature_types, fit_classifier, preprocessor
    from training.tune import first_trial

    if not (args.work / "snapshots.parquet").exists():
        raise SystemExit(f"{args.work}: no snapshots.parquet; run benchmarks/shapes.py --work")
    config = shapes.throwaway_config(args.work, "oracle-gap", 1)
    frame, truth, config = shapes.prepare_app("default", 0, 0, args.work, config)
    t = config.training
    (X, y), (Xv, yv), (Xh, yh), _ = shapes.run_rows(frame, config)
    registry = feature_registry(config.features)
    oracle = join_truth(Xh.index, truth).to_numpy(dtype=float)
    known = np.isfinite(oracle)
    oracle_auc = roc_auc_score(yh[known], oracle[known])
    print(
        f"{args.work}: rows train {len(y):,}, validation {len(yv):,}, hold-out {len(yh):,} "
        f"({int(yh.sum()):,} churners); oracle ROC-AUC {oracle_auc:.4f}, ROC-AUC needed for "
        f"oracle_ratio 0.95: {0.5 + 0.95 * (oracle_auc - 0.5):.4f}",
        flush=True,
    )
    for name, f, labels in (("train", X, y), ("validation", Xv, yv), ("hold-out", Xh, yh)):
        print(
            f"  {name}: median tenure_days {f['tenure_days'].median():.0f}, mean renewals "
            f"{f['renewals'].mean():.2f}, auto-renew off "
            f"{f['auto_renew_off'].astype(float).mean():.3f}, churn {float(np.mean(labels)):.3f}",
            flush=True,
        )

    def report(name: str, p) -> None:
        auc = roc_auc_score(yh, p)
        ratio = oracle_ratio(roc_auc_score(yh[known], p[known]), oracle_auc)
        print(
            f"  {name:<58} hold-out ROC-AUC {auc:.4f}  PR-AUC "
            f"{average_precision_score(yh, p):.4f}  oracle_ratio {ratio:.4f}",
            flush=True,
        )

    def fit_both(Xa, Xva, Xha, tag: str) -> None:
        types = feature_types(Xa, registry)
        logreg, c, _ = tuned_logreg(types, t.seed, Xa, y, Xva, yv)
        report(f"{tag}: logreg (C {c:g})", logreg.predict_proba(Xha)[:, 1])
        pre = preprocessor(types).fit(Xa, y)
        clf = fit_classifier(
            classifier(first_trial(len(y)), t.seed), pre.transform(Xa), y, pre.transform(Xva), yv
        )
        report(
            f"{tag}: LightGBM first trial ({clf.best_iteration_} rounds)",
            clf.predict_proba(pre.transform(Xha))[:, 1],
        )

    if not args.no_hidden:
        fit_both(X, Xv, Xh, "features")
        subscribers = pd.read_parquet(args.work / "synthetic" / "truth" / "subscribers.parquet")
        extra = [hidden_drivers(f.index, subscribers) for f in (X, Xv, Xh)]
        for columns in HIDDEN_SETS:
            Xa, Xva, Xha = (
                pd.concat([f, h[list(columns)]], axis=1)
                for f, h in zip((X, Xv, Xh), extra, strict=True)
            )
            fit_both(Xa, Xva, Xha, "+ " + ", ".join(columns))
    if args.no_grid:
        return
    pre = preprocessor(feature_types(X, registry)).fit(X, y)
    Xt, Xvt, Xht = pre.transform(X), pre.transform(Xv), pre.transform(Xh)
    grid = itertools.product(
        [int(v) for v in args.leaves.split(",")],
        [int(v) for v in args.min_child_samples.split(",")],
        [float(v) for v in args.colsample.split(",")],
    )
    best = (0.0, "")
    for leaves, samples, colsample in grid:
        params = dict(
            first_trial(len(y)),
            num_leaves=leaves,
            min_child_samples=samples,
            learning_rate=0.02,
            colsample_bytree=colsample,
            n_estimators=max(ROUNDS),
        )
        clf = classifier(params, t.seed).fit(Xt, np.asarray(y, dtype=int))
        hold = {n: roc_auc_score(yh, clf.predict_proba(Xht, num_iteration=n)[:, 1]) for n in ROUNDS}
        valid = {
            n: roc_auc_score(yv, clf.predict_proba(Xvt, num_iteration=n)[:, 1]) for n in ROUNDS
        }
        top = max(hold, key=hold.get)
        label = f"{leaves} leaves, min_child_samples {samples}, colsample {colsample}"
        best = max(best, (hold[top], f"{label}, {top} rounds"))
        print(
            f"  {label}: best hold-out {hold[top]:.4f} at {top} rounds (oracle_ratio "
            f"{oracle_ratio(hold[top], oracle_auc):.4f}); hold-out by rounds "
            + " ".join(f"{hold[n]:.4f}" for n in ROUNDS)
            + "; validation "
            + " ".join(f"{valid[n]:.3f}" for n in ROUNDS),
            flush=True,
        )
    print(
        f"ceiling (peeking at the hold-out): ROC-AUC {best[0]:.4f}, oracle_ratio "
        f"{oracle_ratio(best[0], oracle_auc):.4f} ({best[1]})",
        flush=True,
    )


if __name__ == "__main__":
    main()
