"""Write rows as Adjust's hourly gzip CSV uploads, with the mess real exports carry.

Mess, each recorded so tests can check that ingest finds it: duplicated callbacks (a second
copy in a later file), late rows (up to 30 hours), rows shuffled within a file, hours split
into several part files (some header-only), and malformed rows of known kinds listed in
``injected``.
"""

from __future__ import annotations

import hashlib
import io
import os
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from features import schema as s
from features.synthetic import catalog
from features.synthetic.adjust_rows import ACTIVITY_NAMES, Calendar, epoch_strings
from features.synthetic.identity import Identities
from features.synthetic.population import Population

HOUR = 3600.0
GZIP_LEVEL = 1

#: Column definitions as the customer typed them in Adjust (the header row repeats them as written).
CURRENT_DEFINITION = (
    "{activity_kind}",
    "{created_at}",
    "{installed_at}",
    "{app_token}",
    "{app_name}",
    "{os_name}",
    "{adid}",
    "{idfa}",
    "{idfv}",
    "{gps_adid}",
    "user_id",
    "{country}",
    "{environment}",
    "{tracker_name}",
    "{network_name}",
    "{event}",
    "{event_name}",
    "{revenue_float}",
    "{currency}",
    "{subscription_event_type}",
    "{subscription_purchased_at}",
    "{subscription_expiration_time}",
    "{subscription_cancelled_at}",
    "{subscription_transaction_id}",
    "{subscription_original_transaction_id}",
    "{subscription_expired_transaction_id}",
    "{subscription_environment}",
    "{subscription_product_id}",
    "{subscription_sales_region}",
    "{subscription_store}",
)
#: The older definition: other order, bracketed callback parameter, a constant, text install times.
LEGACY_DEFINITION = (
    "{app_token}",
    "{activity_kind}",
    "{created_at}",
    "[user_id]",
    "{adid}",
    "{idfv}",
    "{gps_adid}",
    "{os_name}",
    "{country}",
    "{installed_at}",
    "{network_name}",
    "{event_name}",
    "{revenue_float}",
    "{currency}",
    "{subscription_event_type}",
    "{subscription_event_subtype}",
    "{subscription_purchased_at}",
    "{subscription_expiration_time}",
    "{subscription_cancelled_at}",
    "{subscription_transaction_id}",
    "{subscription_original_transaction_id}",
    "{subscription_environment}",
    "{subscription_product_id}",
    "{subscription_store}",
    "{environment}",
    "export_v1",
)
LEGACY_CONSTANT = "export_v1"

# Rates of the mess, per exported row.
DUPLICATE_RATE = {"subscription": 0.015, "other": 0.003}
LATE_RATE = 0.02
CORRUPTIONS = {  # kind: (rate, applies to subscription rows only)
    "bad_created_at": (2e-4, False),
    "missing_identity": (2e-4, False),
    "truncated_row": (1e-4, False),
    "unknown_event": (2e-3, True),
    "negative_price": (2e-3, True),
    "expiry_before_purchase": (2e-3, True),
}
BAD_TIMES = ("2026-02-30T25:61UTC", "yesterday", "17O0000000")


def definition_hash(definition: tuple[str, ...]) -> str:
    """The file-name hash Adjust derives from a CSV definition (here: its SHA-1, shortened)."""
    return hashlib.sha1(",".join(definition).encode()).hexdigest()[:10]


@dataclass
class ExportResult:
    """What was written: one entry per file, the injected malformed rows, and mess counts."""

    files: list[dict]
    injected: pa.Table
    duplicates: int
    late: int
    rows_written: int
    rows_by_activity: dict[str, int]
    subscription_events: dict[str, int]


def write_export(
    pop: Population,
    ids: Identities,
    subs: dict[str, np.ndarray],
    activity: dict[str, np.ndarray],
    cal: Calendar,
    out_dir: Path,
    rng: np.random.Generator,
    on_file: Callable[[int, int], None] | None = None,
    events: tuple[tuple[str, str], ...] | None = None,
) -> ExportResult:
    """Write every row into ``out_dir`` as ``<app token>_<hour>_<hash>[_<part>].csv.gz`` files.

    ``events``: (name, token) of each in-app event code (default: ``catalog.in_app_events()``).
    """
    events = catalog.in_app_events() if events is None else events
    n_sub = len(subs["sub"])
    sub = np.concatenate([subs["sub"], activity["sub"]])
    created = np.concatenate([subs["created"], activity["ts"]])
    is_sub = np.arange(len(sub)) < n_sub
    platform_of = np.concatenate([pop.platform, np.arange(len(ids.sandbox) - pop.n) % 2])

    # Duplicates and delays decide the file each physical row lands in.
    dup = rng.random(len(sub)) < np.where(
        is_sub, DUPLICATE_RATE["subscription"], DUPLICATE_RATE["other"]
    )
    src = np.concatenate([np.arange(len(sub)), np.flatnonzero(dup)])
    is_copy = np.arange(len(src)) >= len(sub)
    late = ~is_copy & (rng.random(len(src)) < LATE_RATE)
    delay = np.where(late, HOUR * (1 + rng.random(len(src)) * 29), 0.0)
    delay = np.where(is_copy, 1800.0 + rng.random(len(src)) * 86400.0, delay)
    hour = np.floor((created[src] + delay) / HOUR).astype(np.int64)
    legacy = hour < cal.legacy_end_day * 24
    sub_row = src < n_sub
    # a step the row's vocabulary has no name for is not sent (e.g. auto-renew off in legacy)
    # a re-sent copy keeps its original's vocabulary, so copies never straddle the migration
    keep = (hour < cal.days * 24) & (~is_copy | (legacy == legacy[src]))
    at = np.flatnonzero(sub_row)
    name = np.where(legacy[at], subs["legacy"][src[at]], subs["current"][src[at]])
    keep[at] &= name != None  # noqa: E711 (elementwise on an object array)
    values, counts = np.unique(name[keep[at]].astype(str), return_counts=True)
    subscription_events = dict(zip(values.tolist(), counts.tolist(), strict=True))
    src, is_copy, late, hour, legacy, sub_row = (
        a[keep] for a in (src, is_copy, late, hour, legacy, sub_row)
    )
    n = len(src)
    who = sub[src]
    plat = platform_of[who]
    sub_src = np.where(sub_row, src, n_sub)  # n_sub: the null row appended to subscription columns

    # Malformed rows: only rows that have no clean duplicate, at most one defect each.
    defect = np.zeros(n, np.int8)  # 0 = clean, else 1 + index into CORRUPTIONS
    clean_single = ~dup[src]
    has_revenue = ~np.isnan(np.append(subs["revenue"], np.nan)[sub_src])
    has_expiry = ~np.isnan(np.append(subs["expiration"], np.nan)[sub_src])
    for code, (kind, (rate, sub_only)) in enumerate(CORRUPTIONS.items(), start=1):
        eligible = clean_single & (defect == 0)
        if kind == "negative_price":
            eligible &= has_revenue
        elif kind == "expiry_before_purchase":
            eligible &= has_expiry
        elif sub_only:
            eligible &= sub_row
        defect[eligible & (rng.random(n) < rate)] = code

    # Files: each (platform, hour) splits into 1-3 parts under the current definition.
    slots_total = 2 * cal.days * 24
    slot = plat.astype(np.int64) * (cal.days * 24) + hour
    n_parts = np.where(rng.random(slots_total) < 0.3, rng.integers(2, 4, slots_total), 1)
    part = np.where(legacy, 0, np.floor(rng.random(n) * n_parts[slot]).astype(np.int64))
    order = np.lexsort((rng.random(n), part, slot))
    src, is_copy, sub_row, who, plat, defect, slot, part, sub_src = (
        a[order] for a in (src, is_copy, sub_row, who, plat, defect, slot, part, sub_src)
    )

    table = _build_table(
        pop, ids, subs, activity, cal, src, who, plat, sub_row, sub_src, n_sub, defect, rng, events
    )
    tables = {
        legacy: table.select([_semantic(t, legacy) for t in definition]).rename_columns(
            list(definition)
        )
        for legacy, definition in ((False, CURRENT_DEFINITION), (True, LEGACY_DEFINITION))
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    hashes = {False: definition_hash(CURRENT_DEFINITION), True: definition_hash(LEGACY_DEFINITION)}
    defect_names = np.array([""] + list(CORRUPTIONS), object)
    files: list[dict] = []
    injected: dict[str, list] = {"file": [], "line": [], "defect": []}
    jobs: list[tuple[Path, pa.Table, bool, np.ndarray]] = []
    bounds = np.flatnonzero(np.diff(slot * 4 + part)) + 1
    ranges: dict[int, dict[int, tuple[int, int]]] = {}
    for a, b in zip(
        np.concatenate([[0], bounds]).tolist(), np.concatenate([bounds, [n]]).tolist(), strict=True
    ):
        ranges.setdefault(int(slot[a]), {})[int(part[a])] = (a, b)
    for sl, parts in ranges.items():
        p, h = divmod(sl, cal.days * 24)
        is_legacy = bool(h < cal.legacy_end_day * 24)
        stamp = datetime.fromtimestamp(cal.start_epoch + h * HOUR, UTC).strftime("%Y-%m-%dT%H%M%S")
        for pt in range(1 if is_legacy else int(n_parts[sl])):
            a, b = parts.get(pt, (0, 0))  # a part with no rows is written header-only
            fname = f"{catalog.APP_TOKENS[p]}_{stamp}_{hashes[is_legacy]}"
            fname += ".csv.gz" if is_legacy else f"_{_part_token(rng)}.csv.gz"
            bad = np.flatnonzero(defect[a:b])
            injected["file"] += [fname] * len(bad)
            injected["line"] += (bad + 2).tolist()  # line 1 is the header
            injected["defect"] += defect_names[defect[a:b][bad]].tolist()
            cut = bad[defect[a:b][bad] == 1 + list(CORRUPTIONS).index("truncated_row")]
            jobs.append((out_dir / fname, tables[is_legacy].slice(a, b - a), is_legacy, cut))
            files.append(
                {
                    "file": fname,
                    "platform": catalog.PLATFORM_NAMES[p],
                    "hour": h,
                    "legacy": is_legacy,
                    "rows": b - a,
                }
            )
    # zlib and pyarrow release the GIL, so files compress in parallel; bytes do not depend on order
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for done, _ in enumerate(pool.map(lambda job: _write_csv_gz(*job), jobs), start=1):
            if on_file is not None:
                on_file(done, len(jobs))

    kinds = pc.value_counts(table.column("activity_kind")).to_pylist()
    return ExportResult(
        files=files,
        injected=pa.table(
            injected,
            schema=pa.schema(
                [("file", pa.string()), ("line", pa.int64()), ("defect", pa.string())]
            ),
        ),
        duplicates=int(is_copy.sum()),
        late=int(late.sum()),
        rows_written=n,
        rows_by_activity={k["values"]: k["counts"] for k in kinds},
        subscription_events=subscription_events,
    )


def _semantic(token: str, legacy: bool) -> str:
    """The internal column that fills a definition token."""
    if token == LEGACY_CONSTANT:
        return "constant"
    name = token.strip("{}[]")
    if legacy and name in (s.SUB_EVENT_TYPE, s.SUB_EXPIRATION_TIME, s.INSTALLED_AT):
        return name + ":legacy"
    return name


def _lookup(values: list | np.ndarray, index: np.ndarray) -> pa.Array:
    """``values[index]`` as a pyarrow string array; an index of ``len(values)`` gives null."""
    return pa.array(list(values) + [None], pa.string()).take(pa.array(index))


def _build_table(
    pop: Population,
    ids: Identities,
    subs: dict[str, np.ndarray],
    activity: dict[str, np.ndarray],
    cal: Calendar,
    src: np.ndarray,
    who: np.ndarray,
    plat: np.ndarray,
    sub_row: np.ndarray,
    sub_src: np.ndarray,
    n_sub: int,
    defect: np.ndarray,
    rng: np.random.Generator,
    events: tuple[tuple[str, str], ...],
) -> pa.Table:
    """Every column of every physical row, as text, in file order."""
    n = len(src)
    defects = list(CORRUPTIONS)

    def has(kind: str) -> np.ndarray:
        return defect == 1 + defects.index(kind)

    act = np.where(sub_row, 0, src - n_sub)
    who_pa = pa.array(who)
    sub_pa = pa.array(sub_src)
    n_ids = len(ids.sandbox)
    sandbox = ids.sandbox[who]

    def sub_col(values: np.ndarray) -> pa.Array:
        return pa.array(np.append(values, None), pa.string()).take(sub_pa)

    def sub_epoch(values: np.ndarray) -> pa.Array:
        return epoch_strings(np.append(values, np.nan), cal.start_epoch).take(sub_pa)

    kind_code = np.where(sub_row, 3, activity["activity"][act])
    names = [ACTIVITY_NAMES[k] for k in range(3)] + [s.ACTIVITY_SUBSCRIPTION]
    event_idx = np.where(
        sub_row | (activity["event"][act] < 0), len(events), activity["event"][act]
    )

    created = np.concatenate([subs["created"], activity["ts"]])[src]
    created_at = _replace(
        epoch_strings(created, cal.start_epoch),
        has("bad_created_at"),
        _lookup(BAD_TIMES, rng.integers(0, len(BAD_TIMES), n)),
    )

    installed = np.concatenate([pop.install_ts, np.zeros(n_ids - pop.n)])
    installed = np.where(np.isfinite(installed), installed, 0.0)
    installed_text = pc.strftime(
        pa.array(
            (np.floor(installed) + cal.start_epoch).astype("int64") * 1_000_000,
            pa.timestamp("us", tz="UTC"),
        ),
        format="%Y-%m-%dT%H:%MUTC",
    )

    no_identity = has("missing_identity")

    def ident(arr: pa.Array) -> pa.Array:
        return _replace(arr.take(who_pa), no_identity, None)

    network = np.concatenate([pop.network, np.zeros(n_ids - pop.n, np.int16)])
    network_names = [nw[0] for nw in catalog.NETWORKS]
    trackers = ["Organic"] + [
        f"{nw}::{'spring_push' if i % 2 == 0 else 'always_on'}"
        for i, nw in enumerate(network_names)
        if i
    ]

    unknown = has("unknown_event")
    revenue = pc.cast(pa.array(np.append(subs["revenue"], np.nan), from_pandas=True), pa.string())
    revenue = revenue.take(sub_pa)
    revenue = _replace(
        revenue, has("negative_price"), pc.binary_join_element_wise("-", revenue, "")
    )
    backwards = has("expiry_before_purchase")
    purchased = np.append(subs["purchased"], np.nan)[sub_src]
    expiration = np.append(subs["expiration"], np.nan)[sub_src]
    expiration = np.where(backwards, purchased - 86400.0 * rng.integers(1, 30, n), expiration)
    expiration_legacy = np.append(subs["legacy_expiration"], np.nan)[sub_src]
    expiration_legacy = np.where(backwards, expiration, expiration_legacy)
    environment = _lookup([s.ENV_PRODUCTION, s.ENV_SANDBOX], sandbox.astype(np.int64))

    columns = {
        s.ACTIVITY_KIND: _lookup(names, kind_code),
        s.CREATED_AT: created_at,
        s.INSTALLED_AT: epoch_strings(installed, cal.start_epoch).take(who_pa),
        s.INSTALLED_AT + ":legacy": installed_text.take(who_pa),
        s.APP_TOKEN: _lookup(catalog.APP_TOKENS, plat),
        s.APP_NAME: _lookup([catalog.APP_NAME], np.zeros(n, np.int64)),
        s.OS_NAME: _lookup(catalog.PLATFORM_NAMES, plat),
        s.ADID: ident(ids.adid),
        s.IDFA: ident(ids.idfa),
        s.IDFV: ident(ids.idfv),
        s.GPS_ADID: ident(ids.gps_adid),
        s.DEFAULT_USER_ID_PARAM: ident(ids.user_id),
        s.COUNTRY_PH: ids.country.take(who_pa),
        s.ENVIRONMENT_PH: environment,
        s.TRACKER_NAME: _lookup(trackers, network[who]),
        s.NETWORK_NAME: _lookup(network_names, network[who]),
        s.EVENT_TOKEN: _lookup([e[1] for e in events], event_idx),
        s.EVENT_NAME: _lookup([e[0] for e in events], event_idx),
        s.REVENUE_FLOAT: revenue,
        s.CURRENCY_PH: sub_col(subs["currency"]),
        s.SUB_EVENT_TYPE: _replace(sub_col(subs["current"]), unknown, "subscription_wobble"),
        s.SUB_EVENT_TYPE + ":legacy": _replace(
            sub_col(subs["legacy"]), unknown, "subscription_wobble"
        ),
        s.SUB_EVENT_SUBTYPE: sub_col(subs["subtype"]),
        s.SUB_PURCHASED_AT: epoch_strings(purchased, cal.start_epoch),
        s.SUB_EXPIRATION_TIME: epoch_strings(expiration, cal.start_epoch),
        s.SUB_EXPIRATION_TIME + ":legacy": epoch_strings(expiration_legacy, cal.start_epoch),
        s.SUB_CANCELLED_AT: sub_epoch(subs["cancelled"]),
        s.SUB_TRANSACTION_ID: sub_col(subs["transaction"]),
        s.SUB_ORIGINAL_TRANSACTION_ID: sub_col(subs["original"]),
        s.SUB_EXPIRED_TRANSACTION_ID: sub_col(subs["expired"]),
        s.SUB_ENVIRONMENT: _replace(environment, ~sub_row, None),
        s.SUB_PRODUCT_ID: sub_col(subs["product"]),
        s.SUB_SALES_REGION: _replace(ids.sales_region.take(who_pa), ~sub_row, None),
        s.SUB_STORE: _lookup(catalog.STORES, np.where(sub_row, plat, len(catalog.STORES))),
        "constant": _lookup([LEGACY_CONSTANT], np.zeros(n, np.int64)),
    }
    return pa.table(columns)


def _replace(arr: pa.Array, mask: np.ndarray, values: object) -> pa.Array:
    """``arr`` with ``values`` (a scalar, None or an array) where ``mask`` is set."""
    if not mask.any():
        return arr
    if not isinstance(values, pa.Array):
        values = pa.scalar(values, arr.type)
    return pc.if_else(pa.array(mask), values, arr)


def _part_token(rng: np.random.Generator) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), 8))


def _write_csv_gz(path: Path, rows: pa.Table, legacy: bool, truncate: np.ndarray) -> None:
    """CSV (RFC 4180, LF) → gzip with a zero mtime, so the same seed gives the same bytes."""
    buf = io.BytesIO()
    quoting = "all_valid" if legacy else "needed"
    pacsv.write_csv(
        rows,
        buf,
        pacsv.WriteOptions(quoting_style=quoting, quoting_header="needed" if legacy else "none"),
    )
    data = buf.getvalue()
    if len(truncate):
        lines = data.split(b"\n")
        for r in truncate.tolist():
            line = lines[r + 1]
            lines[r + 1] = line[: line.rfind(b",", 0, max(len(line) // 2, 1)) + 1].rstrip(b",")
        data = b"\n".join(lines)
    packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    path.write_bytes(packer.compress(data) + packer.flush())
