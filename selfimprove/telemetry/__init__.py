"""Telemetry adapters: where spans and their eval annotations come from.

Every source implements `TelemetrySource` (base.py) and returns frames in the raw schema (raw.py):
`PhoenixSource` (phoenix.py), `ArizeSource` (arize.py), `FileSource` (files.py). Importing this package is
cheap: pandas, phoenix.client and arize are imported inside the functions that need them.
"""

from selfimprove.telemetry.arize import ArizeSource
from selfimprove.telemetry.base import Progress, ProgressCallback, TelemetrySource, require_utc
from selfimprove.telemetry.files import FileSource
from selfimprove.telemetry.phoenix import PhoenixSource
from selfimprove.telemetry.raw import ANNOTATION_COLUMNS, SPAN_COLUMNS

__all__ = ["ANNOTATION_COLUMNS", "SPAN_COLUMNS", "ArizeSource", "FileSource", "PhoenixSource", "Progress",
           "ProgressCallback", "TelemetrySource", "require_utc"]
