"""How the CLI shows each job's result: summary tables on stdout (``lapse.console``).

One function per result type; none computes anything a job did not return.
"""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from features import schema as s
from features import state as st
from features.ingest import IngestSummary
from features.synthetic import GenerationSummary
from features.synthetic.calibration import TruthCheck
from lapse.console import out, table
from lapse.jobs import DemoResult, FeaturesResult, RescoreOutcome, SyncOutcome
from training.train import TrainResult


def generation(summary: GenerationSummary) -> None:
    rows = [
        ("output", summary.out),
        ("users", summary.users),
        ("subscribers", summary.subscribers),
        ("sandbox testers", summary.sandbox_testers),
        ("files (legacy vocabulary)", f"{summary.files:,} ({summary.legacy_files:,})"),
        ("header-only files", summary.header_only_files),
        ("rows", summary.rows),
        *((f"  {kind} rows", n) for kind, n in sorted(summary.rows_by_activity.items())),
        ("duplicated rows", summary.duplicates),
        ("late rows", summary.late_rows),
        *((f"malformed: {kind}", n) for kind, n in summary.injected.items()),
        (
            "cut-offs",
            f"{len(summary.cutoffs)} ({summary.cutoffs[0]} .. {summary.cutoffs[-1]})"
            if summary.cutoffs
            else "none",
        ),
        ("ground-truth rows", summary.truth_rows),
        ("mean true churn probability", summary.mean_churn_probability),
        ("realised churn rate", summary.realised_churn_rate),
        ("seconds", round(summary.seconds, 1)),
    ]
    out.print(table("Generated", rows))


def truth(check: TruthCheck) -> None:
    out.print(
        table(
            "Ground truth vs realised outcomes",
            [
                ("subscriber cut-offs with an observed outcome", check.observed),
                ("mean true churn probability", check.mean_probability),
                ("realised churn rate", check.realised_rate),
                ("Brier score, truth vs outcome", check.brier),
                ("Brier score expected if truth is right", check.expected_brier),
                ("deviation (standard errors)", round(check.brier_z, 2)),
                ("oracle ROC AUC (the ceiling for any model)", check.oracle_roc_auc),
            ],
        )
    )


def ingest(summary: IngestSummary) -> None:
    rows = [
        ("store", summary.store),
        ("files", summary.files),
        ("  already in the store (skipped)", summary.files_skipped),
        ("  same bytes as another file (skipped)", summary.files_repeated),
        ("  header only", summary.header_only_files),
        ("  bad files", len(summary.bad_files)),
        ("rows read", summary.rows_read),
        ("rows stored", summary.rows_stored),
        ("duplicates dropped", summary.duplicates),
        ("rows quarantined", summary.rows_quarantined),
        *((f"  {reason}", n) for reason, n in summary.quarantined.items()),
        ("commits", summary.commits),
    ]
    if summary.already_retried:
        rows.append(
            ("quarantined rows already retried once (not read again)", summary.already_retried)
        )
    out.print(table("Ingested", rows))
    notes = [(name, "; ".join(items)) for name, items in summary.notes.items() if items]
    if notes:
        out.print(table("Read differently (noted, nothing lost)", notes))
    if summary.bad_files:
        out.print(table("Bad files (in the quarantine at line 0)", list(summary.bad_files.items())))


def features(result: FeaturesResult) -> None:
    frame, built = result.built.frame, result.built
    status = frame[st.STATUS].value_counts()
    rows = [
        ("as of", str(built.as_of)),
        ("events read", built.events),
        ("active subscribers", len(frame)),
        *((f"  {name}", int(n)) for name, n in status.items()),
        ("  auto-renew off", int(frame[st.AUTO_RENEW_OFF].sum())),
        ("features", frame.shape[1]),
        ("output", result.path),
        *ran_on(built.ran_on, built.partitions, built.dashboard),
        ("seconds", round(result.seconds, 1)),
    ]
    out.print(table("Features", rows))


def ran_on(label: str, partitions: int, dashboard: str | None) -> list[tuple[str, Any]]:
    """Where partitioned work ran: rows for a summary table."""
    rows: list[tuple[str, Any]] = [("ran on", f"{label}, {partitions} partition(s)")]
    return rows + ([("dask dashboard", dashboard)] if dashboard else [])


def training(result: TrainResult, registered_model: str) -> None:
    m, gate, split = result.metrics, result.gate, result.split
    oracle = (
        f"{result.oracle_rows:,} of {result.rows['holdout']:,} hold-out rows matched"
        if "oracle_rows" in m
        else "no ground truth"
    )
    out.print(
        table(
            "Training",
            [
                ("MLflow run", result.run_id),
                ("train cut-offs", f"{split.train[0].date()} .. {split.train[-1].date()}"),
                ("validation cut-offs", ", ".join(str(c.date()) for c in split.valid)),
                ("hold-out cut-off", str(split.holdout.date())),
                *((f"rows: {k}", v) for k, v in result.rows.items()),
                ("trials finished (pruned)", f"{result.tuning.finished} ({result.tuning.pruned})"),
                ("best validation ROC AUC", result.tuning.best_value),
                ("calibration", result.model.calibration_),
                ("dropped (constant or empty)", ", ".join(result.dropped_features) or "none"),
                (
                    "LightGBM margin, PR AUC",
                    f"valid {m.get('lgbm_margin_valid_pr_auc', float('nan')):+.4f} "
                    f"hold-out {m.get('lgbm_margin_holdout_pr_auc', float('nan')):+.4f}",
                ),
                *(("warning", w) for w in result.warnings),
                ("oracle", oracle),
                ("oracle_ratio", m.get("oracle_ratio", "no ground truth")),
                (
                    "snapshot rows",
                    f"{result.snapshot_rows:,} built"
                    + (
                        f", {result.sample_fraction:.1%} of each cut-off's kept (training.max_rows)"
                        if result.sample_fraction < 1
                        else ""
                    ),
                ),
                *ran_on(result.ran_on, result.partitions, result.dashboard),
                ("seconds", round(result.seconds["total"], 1)),
            ],
        )
    )
    columns = [("model", "holdout"), ("rule", "baseline_rule"), ("logreg", "baseline_logreg")]
    if "oracle_roc_auc" in m:
        columns += [("model, matched", "oracle_matched_model"), ("oracle", "oracle")]
    comparison = Table(title="Hold-out metrics", title_justify="left")
    comparison.add_column("metric", style="bold")
    for label, _ in columns:
        comparison.add_column(label, justify="right")
    metrics = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "top10_lift", "top20_recall")
    for metric in (*metrics, "lift_quality"):
        values = [m.get(f"{prefix}_{metric}") for _, prefix in columns]
        comparison.add_row(metric, *("-" if v is None else f"{v:.4f}" for v in values))
    out.print(comparison)
    buckets = Table(title="Hold-out buckets", title_justify="left")
    headers = ("users", "share", "expected churners", "expected non-churners")
    for column in ("bucket", *headers, "realised churn rate"):
        buckets.add_column(column, justify="left" if column == "bucket" else "right")
    for name, row in result.buckets.iterrows():
        buckets.add_row(
            str(name),
            f"{int(row['users']):,}",
            f"{row['share']:.1%}",
            f"{row['expected_churners']:,.0f}",
            f"{row['expected_non_churners']:,.0f}",
            f"{row['realised_churn_rate']:.1%}",
        )
    out.print(buckets)
    if gate.moved:
        champion = f"moved to version {gate.version}"
    elif gate.champion_version is None:
        champion = "not set"
    else:
        champion = f"stays on version {gate.champion_version}"
    against = f" (champion: {gate.champion:.4f})" if gate.champion is not None else ""
    out.print(
        f"Registered {registered_model} version {gate.version}; {gate.metric} {gate.candidate:.4f}"
        f"{against}. {gate.reason[:1].upper()}{gate.reason[1:]}: champion {champion}."
    )


def rescore(outcome: RescoreOutcome) -> None:
    result = outcome.result
    counts = result.scores[s.BUCKET].value_counts()
    path = outcome.path or "(not written: dry run; --out FILE writes one)"
    out.print(
        table(
            "Rescored",
            [
                ("model", outcome.model.label),
                ("as of", f"{result.as_of:%Y-%m-%d %H:%M} UTC"),
                ("events read", result.events),
                ("active subscribers scored", len(result.scores)),
                *((f"  model bucket {name}", int(n)) for name, n in counts.items()),
                ("mean churn probability", float(result.scores[s.CHURN_PROBABILITY].mean())),
                ("scores file", path),
                *ran_on(result.ran_on, result.partitions, result.dashboard),
            ],
        )
    )
    sync(outcome.sync)


def sync(outcome: SyncOutcome, from_file: str | None = None) -> None:
    result, config = outcome.report, outcome.config
    dry_run = result.dry_run
    for note in result.notes:
        out.print(f"note: {note}", highlight=False)
    if from_file and outcome.file_policy is not None:
        bounds = ", ".join(f"{name} >= {bound:.4g}" for name, bound in outcome.file_policy.cuts)
        out.print(f"Buckets: the model's bounds recorded in {from_file} ({bounds})")
    if dry_run:
        moves = sorted(result.transitions.items(), key=lambda kv: (-kv[1], kv[0]))
        out.print(
            table(
                f"Would change {config.braze.attribute} (dry run: nothing sent)",
                [(f"{a} -> {b}", n) for (a, b), n in moves],
                columns=("from -> to", "users"),
            )
        )
        request = {
            "method": "POST",
            "url": f"{config.braze.url.rstrip('/')}/users/track",
            "headers": result.headers,
            "body": {"attributes": result.sample},
        }
        if result.sample:
            out.print("Sample request (first users of the first batch):")
            out.print_json(json.dumps(request))
        else:
            out.print("Nothing would be sent: Braze already holds every value.")
    failed = sum(result.failed.values())
    rows = [
        ("users scored", result.users_scored),
        ("changed (to send)", result.changed),
        ("  of which set to null (no longer scored)", result.nulled),
        ("batches", result.batches),
        ("sent", result.sent),
        ("acknowledged", result.acknowledged),
        ("failed", failed),
        *((f"  {reason}", n) for reason, n in sorted(result.failed.items())),
        ("outcome unknown (sent again next run)", result.unknown),
        (  # Braze bills no write to a profile it does not have, and does not say so
            "data points, at most" + (" (would use)" if dry_run else ""),
            result.data_points,
        ),
        ("requests", result.requests),
        ("429s waited", result.rate_limited),
        ("seconds waiting for rate limits", round(result.waited_s, 1)),
        ("run", "dry run" if dry_run else f"{result.run_id}" + (" (resumed)" * result.resumed)),
        ("seconds", round(result.seconds, 1)),
    ]
    out.print(table("Braze sync" + (" (dry run)" if dry_run else ""), rows))


def emulator_started(url: str, key_source: str, rate: str, faults: str | None, n: int) -> None:
    out.print(
        table(
            "Braze emulator",
            [
                ("POST", f"{url}/users/track"),
                ("inspect", f"{url}/_emulator/stats, /_emulator/profiles"),
                ("API key", key_source),
                ("rate limit", rate),
                ("faults", faults or "none"),
                ("existing profiles", n),
            ],
        )
    )


def emulator_stopped(stats: dict[str, Any], seconds: float) -> None:
    rows = [
        (name.replace("_", " "), value)
        for name, value in stats.items()
        if name not in ("statuses", "faults")
    ]
    rows += [(f"  HTTP {code}", n) for code, n in stats["statuses"].items()]
    rows += [(f"  injected {fault}", n) for fault, n in stats["faults"].items()]
    out.print(table("Emulator served", [*rows, ("seconds", round(seconds))]))


def demo_step(title: str, result: Any, registered_model: str) -> None:
    """Each demo step as it ends: a rule, then the step's own summary."""
    if not title.startswith(" "):
        out.rule(title)
    if isinstance(result, GenerationSummary):
        generation(result)
    elif isinstance(result, TruthCheck):
        truth(result)
    elif isinstance(result, IngestSummary):
        ingest(result)
    elif isinstance(result, TrainResult):
        training(result, registered_model)
    elif isinstance(result, RescoreOutcome):
        rescore(result)
    elif isinstance(result, SyncOutcome):
        sync(result)


def demo(result: DemoResult) -> None:
    rows = [(k.replace("_", " "), v) for k, v in result.landed.items() if not isinstance(v, dict)]
    out.print(table("What landed in the Braze emulator", rows))
    raw = result.root / "synthetic" / "raw"
    out.print(
        f"Raw export in {raw}, event store in {result.root}; `mlflow ui --backend-store-uri "
        f"{result.settings.mlflow.tracking_uri}` shows the training run (the demo keeps its own "
        "MLflow registry: your mlflow.tracking_uri and its champion are untouched)."
    )
