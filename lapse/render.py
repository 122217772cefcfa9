"""How the CLI shows each job's result: summary tables on stdout (``lapse.console``).

One function per result type; none computes anything a job did not return.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rich.table import Table

from features import schema as s
from features import state as st
from lapse.console import out, table
from training.drift import SCORE

if TYPE_CHECKING:  # the results' types only: rendering a sync does not load the model stack
    from features.ingest import IngestSummary
    from features.ingest.store import Compaction
    from features.synthetic import GenerationSummary
    from features.synthetic.calibration import TruthCheck
    from lapse.jobs import (
        BacktestOutcome,
        DemoResult,
        FeaturesResult,
        IfDueOutcome,
        RescoreOutcome,
        ServiceAnswers,
        SyncOutcome,
    )
    from training.drift import DriftReport
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
        ("  seen before (same bytes, not read again)", summary.files_skipped),
        ("  same bytes as another file (skipped)", summary.files_repeated),
        ("  header only", summary.header_only_files),
        ("  bad files", len(summary.bad_files)),
        ("rows read", summary.rows_read),
        ("rows stored", summary.rows_stored),
        ("duplicates dropped", summary.duplicates),
        ("rows quarantined", summary.rows_quarantined),
        *((f"  {reason}", n) for reason, n in summary.quarantined.items()),
        ("commits", summary.commits),
        *compaction_rows(summary.compaction),
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
    if summary.seen_before:
        seen = list(summary.seen_before.items())
        out.print(table("Seen before, not all stored then (not read again)", seen))


def compaction_rows(done: Compaction) -> list[tuple[str, Any]]:
    """Summary rows of a store compaction: none when no month needed it."""
    if not done.months:
        return []
    months = f"{done.months[0]} to {done.months[-1]}" if len(done.months) > 1 else done.months[0]
    return [
        ("months compacted", f"{len(done.months)} ({months})"),
        ("  event files before / after", f"{done.files_before:,} / {done.files_after:,}"),
        ("  rows rewritten", done.rows),
        ("  seconds", round(done.seconds, 1)),
    ]


def compaction(done: Compaction) -> None:
    rows = compaction_rows(done) or [("months compacted", "none (no month holds several files)")]
    out.print(table("Compacted", rows))


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


def refit_rows(refit: dict) -> list[tuple[str, Any]]:
    """Summary rows of the production refit (training.refit), none without one."""
    if not refit:
        return [("refit", "off (the registered model is the time-split one)")]
    return [
        ("refit: cut-offs", refit["cutoffs"]),
        (
            "refit: rows train / stop / calibrate",
            f"{refit['rows_train']:,} / {refit['rows_stop']:,} / {refit['rows_calibrate']:,}",
        ),
        ("refit: calibrated on", f"{refit['calibrated_on']} ({refit['calibration']})"),
    ]


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
                ("validation ROC AUC (trial kept)", result.tuning.best_value),
                ("trial kept", result.tuning.selection.reason()),
                ("calibration", (result.evaluation_model or result.model).calibration_),
                *refit_rows(result.refit),
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


def if_due(outcome: IfDueOutcome, registered_model: str) -> None:
    """Why `lapse train --if-due` trained (then the training summary), or why it did not."""
    decision = outcome.decision
    if decision.due:
        out.print("Retraining: due because", highlight=False)
        for reason in decision.reasons:
            out.print(f"  - {reason}", highlight=False)
    else:
        out.print("Not due, nothing trained:", highlight=False)
    for note in decision.notes:
        out.print(f"  {'-' if not decision.due else '·'} {note}", highlight=False)
    if outcome.training is not None:
        training(outcome.training, registered_model)


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
                *drift_rows(result.drift),
                ("drift record", outcome.drift_path or "(not kept: dry run)"),
                ("scores history", _history(outcome)),
                *ran_on(result.ran_on, result.partitions, result.dashboard),
            ],
        )
    )
    sync(outcome.sync)


def drift_rows(report: DriftReport) -> list[tuple[str, object]]:
    """The drift lines of a rescore summary: the score's PSI and the features past the
    threshold, largest first (or why drift could not be measured)."""
    if not report.available:
        return [("drift", f"unavailable: {report.reason}")]
    rows: list[tuple[str, object]] = [("score PSI", report.score_psi)]
    if report.exempted:
        aged = ", ".join(f"{k} {report.feature_psi[k]:.3f}" for k in report.exempted)
        rows.append(("drift exempt (monitoring.drift_exempt)", aged))
    if report.exempt_unknown:
        rows.append(
            (
                "warning",
                "monitoring.drift_exempt names no feature of this model: "
                + ", ".join(report.exempt_unknown),
            )
        )
    if not report.flagged:
        exempt = {*report.exempted, *report.exempt}
        measured = {k: v for k, v in report.feature_psi.items() if k not in exempt}
        largest = max(measured.items(), key=lambda kv: kv[1], default=None)
        worst = f" (largest: {largest[0]} {largest[1]:.3f})" if largest else ""
        return [*rows, (f"drift (PSI > {report.threshold:g})", f"none{worst}")]
    values = {**report.feature_psi, SCORE: report.score_psi}
    rows.append((f"DRIFT (PSI > {report.threshold:g})", f"{len(report.flagged)} flagged"))
    rows += [(f"  {name}", float(values[name])) for name in report.flagged]
    return rows


def _history(outcome: RescoreOutcome) -> str:
    written = outcome.history
    if written is None:
        return "(not recorded: dry run)"
    if written.written:
        return str(written.path)
    return f"{written.path} (kept: this model version already recorded the day)"


#: The per-day columns of ``lapse backtest``'s table: (result column, heading).
BACKTEST_COLUMNS = (
    ("scored", "scored"),
    ("mean_probability", "pred. churn"),
    ("realised_churn_rate", "real. churn"),
    ("realised_roc_auc", "ROC AUC"),
    ("realised_pr_auc", "PR AUC"),
    ("realised_brier", "Brier"),
    ("realised_ece", "ECE"),
    ("realised_lift_quality", "lift qual."),
    ("realised_top10_lift", "top 10% lift"),
)


def backtest(outcome: BacktestOutcome) -> None:
    from rich import box

    result = outcome.result
    models = result.days[[s.MODEL_NAME, s.MODEL_VERSION]].drop_duplicates()
    one = len(models) == 1  # the usual case: its name goes in the title, not in every row
    title = "Backtest per scoring day"
    if one:
        title = f"Backtest of {models.iloc[0, 0]} v{models.iloc[0, 1]} per scoring day"
    days = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 0),
    )
    days.add_column("scoring day", style="bold", no_wrap=True, min_width=10)
    if not one:
        days.add_column("model", no_wrap=True, justify="right", min_width=6)
    for _, heading in BACKTEST_COLUMNS:
        days.add_column(heading, justify="right", min_width=6)
    for _, row in result.days.iterrows():
        cells = []
        for column, _ in BACKTEST_COLUMNS:
            value = row.get(column)
            if value is None or (isinstance(value, float) and value != value):
                cells.append("-")
            elif column == "scored":
                cells.append(f"{int(value):,}")
            else:
                cells.append(f"{float(value):.3f}")
        model = [] if one else [f"{row[s.MODEL_NAME]} v{row[s.MODEL_VERSION]}"]
        days.add_row(str(row[s.AS_OF]), *model, *cells)
    if len(result.days):
        out.print(days)
    if result.pending:
        pending = Table(title="Pending (horizon not over yet)", title_justify="left")
        for heading in ("scoring day", "model", "scored", "labels complete on"):
            pending.add_column(heading, justify="right" if heading == "scored" else "left")
        for day in result.pending:
            pending.add_row(
                str(day.as_of),
                f"{day.model_name} v{day.model_version}",
                f"{day.scored:,}",
                f"{day.complete_on:%Y-%m-%d %H:%M} UTC",
            )
        out.print(pending)
    newest = result.newest
    rows: list[tuple[str, object]] = [
        ("label horizon (days)", result.horizon_days),
        (
            "newest stored event",
            f"{result.observed_until:%Y-%m-%d %H:%M} UTC" if result.observed_until else None,
        ),
        ("scoring days checked", len(result.days)),
        ("scoring days pending", len(result.pending)),
    ]
    if newest is not None:
        rows += [
            (
                "newest complete day",
                f"{newest[s.AS_OF]} ({newest[s.MODEL_NAME]} v{newest[s.MODEL_VERSION]})",
            ),
            ("  realised ROC AUC", _number(newest.get("realised_roc_auc"))),
            ("  realised ECE", _number(newest.get("realised_ece"))),
        ]
    rows += [
        ("report", str(outcome.report)),
        ("MLflow experiment", outcome.experiment),
        ("MLflow run", outcome.run_id),
        *(("note", note) for note in result.notes),
    ]
    out.print(table("Backtest", rows))


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number == number else None


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
    from features.ingest import IngestSummary
    from features.synthetic import GenerationSummary
    from features.synthetic.calibration import TruthCheck
    from lapse.jobs import RescoreOutcome, ServiceAnswers, SyncOutcome
    from training.train import TrainResult  # all loaded by the demo already

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
    elif isinstance(result, ServiceAnswers):
        service_answers(result)


def service_answers(answers: ServiceAnswers) -> None:
    """Both HTTP answers about one subscriber, side by side, with what the rescore wrote."""
    scored, looked = answers.scored, answers.looked_up
    both = Table(
        title=f"The service on {answers.url} (stopped again): subscriber {answers.user_id} "
        f"({answers.platform})",
        title_justify="left",
    )
    both.add_column("", style="bold")
    both.add_column(f"POST /score_events ({answers.callbacks} callbacks)", justify="right")
    both.add_column("POST /lookup (the rescore's file)", justify="right")
    both.add_row("as of", str(answers.score_events.get("as_of", answers.as_of)), looked[s.AS_OF])
    both.add_row(
        "churn probability",
        f"{scored[s.CHURN_PROBABILITY]:.6f}",
        f"{looked[s.CHURN_PROBABILITY]:.6f}",
    )
    both.add_row("bucket", scored[s.BUCKET], looked[s.BUCKET])
    both.add_row("reasons", ", ".join(scored[s.REASONS]), ", ".join(looked[s.REASONS]))
    both.add_row("model version", str(scored["model_version"]), str(looked["model_version"]))
    out.print(both)
    out.print(
        f"The rescore wrote {answers.rescored:.6f} for this subscriber; /score_events rebuilt its "
        "features from the callbacks alone. The answers are in service-answers.json.",
        highlight=False,
    )


def demo(result: DemoResult) -> None:
    """The demo's closing summary: the model against its baselines and the oracle, the buckets,
    what Braze billed, and where to look next (MLflow, the notebooks)."""
    rows = [(k.replace("_", " "), v) for k, v in result.landed.items() if not isinstance(v, dict)]
    out.print(table("What landed in the Braze emulator", rows))
    out.rule("Summary")
    training, rescored = result.training, result.rescore
    if training is not None:
        m = training.metrics
        columns = [("model", "holdout"), ("CRM rule", "baseline_rule")]
        columns += [("logistic regression", "baseline_logreg")]
        columns += [("oracle", "oracle")] if "oracle_roc_auc" in m else []
        metrics = Table(title="Hold-out metrics against the baselines and the oracle")
        metrics.title_justify = "left"
        metrics.add_column("metric", style="bold")
        for label, _ in columns:
            metrics.add_column(label, justify="right")
        for name in ("roc_auc", "pr_auc", "brier", "top10_lift"):
            values = [m.get(f"{prefix}_{name}") for _, prefix in columns]
            metrics.add_row(name, *("-" if v is None else f"{v:.4f}" for v in values))
        out.print(metrics)
    rows = []
    if training is not None and "oracle_ratio" in training.metrics:
        rows.append(("oracle_ratio (model AUC gain / oracle's)", training.metrics["oracle_ratio"]))
    if rescored is not None:
        policy = rescored.sync.config.policy
        bounds = ", ".join(f"{name} >= {bound:.3g}" for name, bound in policy.cuts)
        rows.append(("bucket bounds", f"{bounds}, else {policy.rest}"))
        counts = rescored.result.scores[s.BUCKET].value_counts()
        rows += [(f"  subscribers in {name}", int(n)) for name, n in counts.items()]
    if result.landed:
        rows.append(("Braze data points used (both syncs)", result.landed.get("data_points")))
    if training is not None:
        rows.append(("MLflow run", training.run_id))
    mlflow = result.settings.mlflow
    rows += [
        ("MLflow tracking", mlflow.tracking_uri),
        ("MLflow artifacts", mlflow.artifact_location),
        ("event store", result.root),
        ("raw Adjust export", result.root / "synthetic" / "raw"),
    ]
    out.print(table("The demo", rows))
    out.print(
        f"Open the run: mlflow ui --backend-store-uri {mlflow.tracking_uri}\n"
        "Notebooks: notebooks/ (explore, train and explain, score and sync; the first one run "
        "makes a small sample app under <store.path>/notebooks): "
        "uv run --with jupyterlab jupyter lab notebooks/\n"
        "The demo keeps its own MLflow registry: your mlflow.tracking_uri and its champion are "
        "untouched.",
        highlight=False,
        soft_wrap=True,
    )
