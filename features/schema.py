"""Column names and vocabularies shared by every stage: Adjust's export, Lapse's events.

Adjust names come from ``../shared/specs/adjust-subscriptions.md``; canonical names are fixed by
``DESIGN.md``. Nothing else in the code base spells a column name as a literal.
"""

from __future__ import annotations

from typing import Final

# --- Adjust raw export: placeholder names (the header token without its braces) -------------------
ACTIVITY_KIND: Final = "activity_kind"
CREATED_AT: Final = "created_at"
INSTALLED_AT: Final = "installed_at"
APP_TOKEN: Final = "app_token"
APP_NAME: Final = "app_name"
OS_NAME: Final = "os_name"
ADID: Final = "adid"
IDFA: Final = "idfa"
IDFV: Final = "idfv"
GPS_ADID: Final = "gps_adid"
COUNTRY_PH: Final = "country"
ENVIRONMENT_PH: Final = "environment"
TRACKER_NAME: Final = "tracker_name"
NETWORK_NAME: Final = "network_name"
EVENT_TOKEN: Final = "event"
EVENT_NAME: Final = "event_name"
REVENUE_FLOAT: Final = "revenue_float"
CURRENCY_PH: Final = "currency"
SUB_EVENT_TYPE: Final = "subscription_event_type"
SUB_EVENT_SUBTYPE: Final = "subscription_event_subtype"
SUB_PURCHASED_AT: Final = "subscription_purchased_at"
SUB_EXPIRATION_TIME: Final = "subscription_expiration_time"
SUB_CANCELLED_AT: Final = "subscription_cancelled_at"
SUB_TRANSACTION_ID: Final = "subscription_transaction_id"
SUB_ORIGINAL_TRANSACTION_ID: Final = "subscription_original_transaction_id"
SUB_EXPIRED_TRANSACTION_ID: Final = "subscription_expired_transaction_id"
SUB_ENVIRONMENT: Final = "subscription_environment"
SUB_PRODUCT_ID: Final = "subscription_product_id"
SUB_SALES_REGION: Final = "subscription_sales_region"
SUB_STORE: Final = "subscription_store"
#: The app's customer user id arrives as a bare-named callback parameter; its name is configurable.
DEFAULT_USER_ID_PARAM: Final = "user_id"

# --- Adjust values -------------------------------------------------------------------------------
ACTIVITY_INSTALL: Final = "install"
ACTIVITY_SESSION: Final = "session"
ACTIVITY_EVENT: Final = "event"
ACTIVITY_SUBSCRIPTION: Final = "subscription"
STORE_APPLE: Final = "appleappstore"
STORE_GOOGLE: Final = "googleplaystore"
ENV_PRODUCTION: Final = "production"
ENV_SANDBOX: Final = "sandbox"
OS_IOS: Final = "ios"
OS_ANDROID: Final = "android"

#: The current Adjust subscription vocabulary (spec §a).
CURRENT_EVENTS: Final = (
    "activation",
    "trial_started",
    "discounted_offer",
    "renewal",
    "grace_period",
    "billing_retry",
    "on_hold",
    "paused",
    "renewal_from_billing_retry",
    "price_accepted",
    "price_declined",
    "cancellation",
    "expiration",
    "reactivation",
    "refund",
    "revoked",
)

#: Legacy (event, subtype) pairs and the current event Lapse maps them to (spec §b). Legacy
#: ``cancellation`` meant the period ended unrenewed, which the current vocabulary calls
#: ``expiration`` (current ``cancellation`` is auto-renew turned off, access continuing).
LEGACY_TO_CURRENT: Final = {
    ("activation", "initial_subscription"): "activation",
    ("activation", "initial_trial"): "trial_started",
    ("activation", "initial_offer"): "discounted_offer",
    ("first_conversion", "converted_trial"): "renewal",
    ("first_conversion", "converted_offer"): "renewal",
    ("entered_billing_retry", "trial_in_retry"): "billing_retry",
    ("entered_billing_retry", "offer_in_retry"): "billing_retry",
    ("entered_billing_retry", "subscription_in_retry"): "billing_retry",
    ("renewal", "renewed_subscription"): "renewal",
    ("cancellation", "failed_trial"): "expiration",
    ("cancellation", "failed_offer"): "expiration",
    ("cancellation", "failed_subscription"): "expiration",
    ("cancellation", "failed_trial_from_retry"): "expiration",
    ("cancellation", "failed_offer_from_retry"): "expiration",
    ("cancellation", "failed_subscription_from_retry"): "expiration",
    ("renewal_from_billing_retry", "converted_trial_from_retry"): "renewal_from_billing_retry",
    ("renewal_from_billing_retry", "converted_offer_from_retry"): "renewal_from_billing_retry",
    ("renewal_from_billing_retry", "renewed_subscription_from_retry"): "renewal_from_billing_retry",
    ("reactivation", "reactivated_subscription"): "reactivation",
}
LEGACY_ONLY_EVENTS: Final = ("first_conversion", "entered_billing_retry")

# --- Canonical event table (after ingest; DESIGN.md "Canonical event columns") -------------------
USER_ID: Final = "user_id"
PLATFORM: Final = "platform"
TS: Final = "ts"
KIND: Final = "kind"
EVENT: Final = "event"
EVENT_RAW: Final = "event_raw"
PRODUCT_ID: Final = "product_id"
STORE: Final = "store"
ENVIRONMENT: Final = "environment"
PRICE: Final = "price"
CURRENCY: Final = "currency"
EXPIRES_AT: Final = "expires_at"
CANCELLED_AT: Final = "cancelled_at"
TRANSACTION_ID: Final = "transaction_id"
ORIGINAL_TRANSACTION_ID: Final = "original_transaction_id"
SALES_REGION: Final = "sales_region"
COUNTRY: Final = "country"
SOURCE: Final = "source"
LINE: Final = "line"

# Columns the event store keeps beyond DESIGN.md's list (all nullable unless noted).
PURCHASED_AT: Final = "purchased_at"
EXPIRED_TRANSACTION_ID: Final = "expired_transaction_id"
EVENT_SUBTYPE: Final = "event_subtype"  # legacy subtype as received; null on current rows
CONVERSION_FROM: Final = "conversion_from"  # "trial" / "offer" when a legacy row says so
ADID: Final = "adid"  # same name as the placeholder
NETWORK: Final = "network"  # acquisition network ({network_name})
INSTALLED_AT_COL: Final = "installed_at"
EVENT_KEY: Final = "event_key"  # stable dedup key (not null)

#: ``kind`` values: Adjust's activity kind, with subscription rows recognised by their event type.
KIND_SUBSCRIPTION: Final = ACTIVITY_SUBSCRIPTION
KIND_EVENT: Final = ACTIVITY_EVENT
KIND_SESSION: Final = ACTIVITY_SESSION
KIND_INSTALL: Final = ACTIVITY_INSTALL

#: The canonical event table, in column order. ``event`` holds the current subscription
#: vocabulary on subscription rows, the in-app event name on ``event`` rows, and the activity
#: kind itself on session and install rows. ``platform`` is "ios" / "android"; ``ts`` and every
#: ``*_at`` column are UTC; ``currency``, ``sales_region`` and ``country`` are upper case.
EVENT_COLUMNS: Final = {
    USER_ID: "string",  # not null: customer user id, else the adid (the identity rule)
    PLATFORM: "string",  # not null
    TS: "timestamp[us, UTC]",  # not null
    KIND: "string",  # not null
    EVENT: "string",  # not null
    EVENT_RAW: "string",
    EVENT_SUBTYPE: "string",
    CONVERSION_FROM: "string",
    PRODUCT_ID: "string",
    STORE: "string",
    ENVIRONMENT: "string",  # "production" / "sandbox"
    PRICE: "float64",
    CURRENCY: "string",
    PURCHASED_AT: "timestamp[us, UTC]",
    EXPIRES_AT: "timestamp[us, UTC]",
    CANCELLED_AT: "timestamp[us, UTC]",
    TRANSACTION_ID: "string",
    ORIGINAL_TRANSACTION_ID: "string",
    EXPIRED_TRANSACTION_ID: "string",
    SALES_REGION: "string",
    COUNTRY: "string",
    ADID: "string",
    NETWORK: "string",
    INSTALLED_AT_COL: "timestamp[us, UTC]",
    EVENT_KEY: "string",  # not null
    SOURCE: "string",  # not null: file (or callback log) the row came from
    LINE: "int64",  # not null: 1-based line in that file (1 = header)
}

# --- Quarantine (DESIGN.md "Files"): rejected rows with where they came from and why ------------
REASON: Final = "reason"
RAW: Final = "raw"
QUARANTINE_COLUMNS: Final = {SOURCE: "string", LINE: "int64", REASON: "string", RAW: "string"}
DETAIL: Final = "detail"  # what was found, naming the field (e.g. "created_at='yesterday'")
#: Unknown Adjust columns kept by ingest (``ingest.keep_unknown_columns``): column name -> text.
EXTRA: Final = "extra"

# --- Features, labels and scores -----------------------------------------------------------------
#: Feature frames are indexed by subscriber: (user_id, platform); snapshots add as_of in front.
SUBSCRIBER_INDEX: Final = (USER_ID, PLATFORM)
BUCKET: Final = "bucket"
REASONS: Final = "reasons"

# --- Ground truth written by the synthetic generator ---------------------------------------------
AS_OF: Final = "as_of"
HORIZON_DAYS: Final = "horizon_days"
CHURN_PROBABILITY: Final = "churn_probability"
CHURNED: Final = "churned"
STATE: Final = "state"

#: Snapshot frames (features + label at many cut-offs) are indexed by (as_of, user_id, platform).
SNAPSHOT_INDEX: Final = (AS_OF, USER_ID, PLATFORM)

# --- Scores history (``<store>/scores_history/``): what every rescore scored, and with what -------
MODEL_NAME: Final = "model_name"
MODEL_VERSION: Final = "model_version"
#: The columns of a scores-history file, in order.
HISTORY_COLUMNS: Final = (
    USER_ID,
    PLATFORM,
    AS_OF,
    CHURN_PROBABILITY,
    BUCKET,
    MODEL_NAME,
    MODEL_VERSION,
)
