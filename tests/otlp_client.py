#!/usr/bin/env python3
"""Independent OTLP client for sqlvigil's end-to-end receiver tests.

It sends metrics (and optionally one log record) with the official OpenTelemetry
Python SDK and its OTLP exporters, so the receiver is checked against an encoder
that is not the project's own. Requirements: tests/requirements.txt
(`python3 -m pip install -r tests/requirements.txt`).

Each value given with --values becomes exactly one export holding one data point:
the value is recorded, then the meter provider is force-flushed.

  --kind gauge  each value is recorded with the synchronous Gauge API, so the
                exported gauge point carries exactly that value.
  --kind sum    a monotonic cumulative counter (observable counter); each value is
                the counter's cumulative total at that export, so the values must
                not decrease. The exported sum point carries exactly that value.

Every export's result is checked (the SDK only logs export failures); the script
exits 1 with a message on stderr if any export fails, and 2 on bad arguments.
On success it prints one JSON line to stdout, e.g.
  {"exported_points": 3, "exported_logs": 0, "protocol": "grpc", ...}
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Callable, Iterable, Sequence

try:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import (
        LogRecordExporter,
        LogRecordExportResult,
        SimpleLogRecordProcessor,
    )
    from opentelemetry.sdk.metrics import (
        Counter,
        Histogram,
        MeterProvider,
        ObservableCounter,
        ObservableGauge,
        ObservableUpDownCounter,
        UpDownCounter,
    )
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        MetricExporter,
        MetricExportResult,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry._logs import SeverityNumber
except ImportError as exc:  # pragma: no cover - exercised only without the deps
    sys.stderr.write(
        f"otlp_client.py: missing OpenTelemetry SDK ({exc}); run: "
        "python3 -m pip install -r tests/requirements.txt\n"
    )
    sys.exit(3)


class RecordingMetricExporter(MetricExporter):
    """Delegates to a real OTLP metric exporter and remembers every result."""

    def __init__(self, inner: MetricExporter) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner = inner
        self.results: list[MetricExportResult] = []
        self.errors: list[str] = []
        self.exported_points = 0

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        points = sum(
            len(metric.data.data_points)
            for rm in metrics_data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
        )
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as exc:  # the reader would swallow it; keep it
            self.errors.append(f"metric export raised {type(exc).__name__}: {exc}")
            result = MetricExportResult.FAILURE
        self.results.append(result)
        if result == MetricExportResult.SUCCESS:
            self.exported_points += points
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class RecordingLogExporter(LogRecordExporter):
    """Delegates to a real OTLP log exporter and remembers every result."""

    def __init__(self, inner: LogRecordExporter) -> None:
        self.inner = inner
        self.results: list = []
        self.errors: list[str] = []
        self.exported_logs = 0

    def export(self, batch: Sequence) -> LogRecordExportResult:
        try:
            result = self.inner.export(batch)
        except Exception as exc:
            self.errors.append(f"log export raised {type(exc).__name__}: {exc}")
            result = LogRecordExportResult.FAILURE
        self.results.append(result)
        # The exporters return LogRecordExportResult (or the deprecated LogExportResult).
        if getattr(result, "name", None) == "SUCCESS":
            self.exported_logs += len(batch)
        return result

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self):
        self.inner.shutdown()


def parse_kv(items: Iterable[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"otlp_client.py: {what} must be k=v, got {item!r}")
        out[key] = value
    return out


def parse_values(raw: str) -> list[float]:
    values = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise SystemExit(f"otlp_client.py: --values: not a number: {part!r}")
        if not math.isfinite(v):
            raise SystemExit(f"otlp_client.py: --values: not finite: {part!r}")
        values.append(v)
    if not values:
        raise SystemExit("otlp_client.py: --values: give at least one value")
    return values


def cumulative_everything() -> dict:
    """Cumulative for every kind, whatever OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE
    says (the synchronous gauge is cumulative by the SDK's default)."""
    return {
        Counter: AggregationTemporality.CUMULATIVE,
        UpDownCounter: AggregationTemporality.CUMULATIVE,
        Histogram: AggregationTemporality.CUMULATIVE,
        ObservableCounter: AggregationTemporality.CUMULATIVE,
        ObservableUpDownCounter: AggregationTemporality.CUMULATIVE,
        ObservableGauge: AggregationTemporality.CUMULATIVE,
    }


def make_exporters(protocol: str, endpoint: str, timeout: float):
    endpoint = endpoint.rstrip("/")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        metric = OTLPMetricExporter(
            endpoint=endpoint,
            insecure=True,
            timeout=timeout,
            preferred_temporality=cumulative_everything(),
        )
        log = OTLPLogExporter(endpoint=endpoint, insecure=True, timeout=timeout)
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        metric = OTLPMetricExporter(
            endpoint=endpoint + "/v1/metrics",
            timeout=timeout,
            preferred_temporality=cumulative_everything(),
        )
        log = OTLPLogExporter(endpoint=endpoint + "/v1/logs", timeout=timeout)
    return metric, log


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Send metrics (and optionally a log record) over OTLP with the "
        "official OpenTelemetry Python SDK.",
    )
    p.add_argument("--protocol", choices=["grpc", "http"], required=True)
    p.add_argument(
        "--endpoint",
        required=True,
        help="base URL, e.g. http://127.0.0.1:4317 (grpc) or http://127.0.0.1:4318 "
        "(http; /v1/metrics and /v1/logs are appended)",
    )
    p.add_argument("--instance", required=True, help="resource sqlserver.instance.name")
    p.add_argument("--host", required=True, help="resource host.name")
    p.add_argument("--service-name", default="otlp-client-test", help="resource service.name")
    p.add_argument("--metric", required=True, help="metric name")
    p.add_argument("--values", required=True, help="comma-separated values, one export each")
    p.add_argument("--kind", choices=["gauge", "sum"], default="gauge")
    p.add_argument("--unit", default="", help="metric unit")
    p.add_argument(
        "--attr", action="append", default=[], metavar="K=V", help="data point attribute (repeatable)"
    )
    p.add_argument(
        "--resource-attr",
        action="append",
        default=[],
        metavar="K=V",
        help="extra resource attribute (repeatable)",
    )
    p.add_argument("--log", metavar="MESSAGE", help="also export one log record with this body")
    p.add_argument(
        "--log-severity",
        default="INFO",
        choices=["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"],
    )
    p.add_argument("--timeout", type=float, default=10.0, help="per-export timeout, seconds")
    p.add_argument(
        "--interval-ms",
        type=float,
        default=5.0,
        help="pause between exports so points get distinct timestamps",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    values = parse_values(args.values)
    attrs = parse_kv(args.attr, "--attr")
    resource_attrs = parse_kv(args.resource_attr, "--resource-attr")
    if args.kind == "sum":
        for prev, cur in zip(values, values[1:]):
            if cur < prev:
                raise SystemExit(
                    f"otlp_client.py: --kind sum takes cumulative totals, which must not "
                    f"decrease ({prev} then {cur})"
                )
        if values[0] < 0:
            raise SystemExit("otlp_client.py: --kind sum: a monotonic counter cannot be negative")

    resource = Resource.create(
        {
            **resource_attrs,
            "sqlserver.instance.name": args.instance,
            "host.name": args.host,
            "service.name": args.service_name,
        }
    )
    metric_inner, log_inner = make_exporters(args.protocol, args.endpoint, args.timeout)
    metric_exporter = RecordingMetricExporter(metric_inner)
    # An infinite interval: no background thread; only force_flush exports.
    reader = PeriodicExportingMetricReader(
        metric_exporter,
        export_interval_millis=math.inf,
        export_timeout_millis=args.timeout * 1000,
    )
    provider = MeterProvider(metric_readers=[reader], resource=resource)
    meter = provider.get_meter("sqlvigil.tests.otlp_client")

    failures: list[str] = []
    current = {"value": values[0]}
    set_value: Callable[[float], None]
    if args.kind == "gauge":
        gauge = meter.create_gauge(args.metric, unit=args.unit)

        def set_value(v: float) -> None:
            gauge.set(v, attributes=attrs)

    else:

        def observe(_options: CallbackOptions):
            return [Observation(current["value"], attributes=attrs)]

        meter.create_observable_counter(args.metric, callbacks=[observe], unit=args.unit)

        def set_value(v: float) -> None:
            current["value"] = v

    for i, v in enumerate(values):
        if i > 0 and args.interval_ms > 0:
            time.sleep(args.interval_ms / 1000.0)
        set_value(v)
        before = len(metric_exporter.results)
        flushed = provider.force_flush(timeout_millis=args.timeout * 1000 + 1000)
        new_results = metric_exporter.results[before:]
        if not flushed:
            failures.append(f"value #{i} ({v}): force_flush returned False")
        if not new_results:
            failures.append(f"value #{i} ({v}): nothing was exported")
        elif any(r != MetricExportResult.SUCCESS for r in new_results):
            failures.append(f"value #{i} ({v}): export result {[r.name for r in new_results]}")

    exported_logs = 0
    log_exporter = None
    if args.log is not None:
        log_exporter = RecordingLogExporter(log_inner)
        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
        logger = logger_provider.get_logger("sqlvigil.tests.otlp_client")
        severity = {
            "TRACE": SeverityNumber.TRACE,
            "DEBUG": SeverityNumber.DEBUG,
            "INFO": SeverityNumber.INFO,
            "WARN": SeverityNumber.WARN,
            "ERROR": SeverityNumber.ERROR,
            "FATAL": SeverityNumber.FATAL,
        }[args.log_severity]
        logger.emit(
            timestamp=time.time_ns(),
            severity_number=severity,
            severity_text=args.log_severity,
            body=args.log,
            attributes=attrs or None,
        )
        if not logger_provider.force_flush(int(args.timeout * 1000) + 1000):
            failures.append("log: force_flush returned False")
        if not log_exporter.results:
            failures.append("log: nothing was exported")
        elif any(getattr(r, "name", None) != "SUCCESS" for r in log_exporter.results):
            failures.append(f"log: export result {[getattr(r, 'name', r) for r in log_exporter.results]}")
        exported_logs = log_exporter.exported_logs
        logger_provider.shutdown()
    else:
        log_inner.shutdown()

    failures.extend(metric_exporter.errors)
    if log_exporter is not None:
        failures.extend(log_exporter.errors)
    provider.shutdown()

    if failures:
        sys.stderr.write(
            f"otlp_client.py: export to {args.endpoint} ({args.protocol}) failed:\n"
            + "".join(f"  {f}\n" for f in failures)
        )
        return 1

    print(
        json.dumps(
            {
                "exported_points": metric_exporter.exported_points,
                "exported_logs": exported_logs,
                "protocol": args.protocol,
                "endpoint": args.endpoint,
                "metric": args.metric,
                "kind": args.kind,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
