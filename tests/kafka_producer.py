#!/usr/bin/env python3
"""Writes OTLP metrics to Kafka the way the OpenTelemetry Collector's kafka exporter does
with `encoding: otlp_proto`: each message is one serialized ExportMetricsServiceRequest
(no key unless --key). An independent producer (confluent-kafka, librdkafka) for the
Kafka bus tests.

usage: kafka_producer.py --bootstrap HOST:PORT --topic T --instance I --metric NAME
                         --values 1,2,3 [--t0-ns N] [--step-ns N] [--key K]
Prints one JSON line: {"produced": N}.
"""
import argparse
import json
import sys
import time

from confluent_kafka import Producer
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource


def request(instance, metric, values, t0, step):
    points = [
        NumberDataPoint(time_unix_nano=t0 + i * step, as_double=v)
        for i, v in enumerate(values)
    ]
    attrs = [
        KeyValue(key="sqlserver.instance.name", value=AnyValue(string_value=instance)),
        KeyValue(key="host.name", value=AnyValue(string_value="kafka-host")),
    ]
    return ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                resource=Resource(attributes=attrs),
                scope_metrics=[
                    ScopeMetrics(
                        metrics=[
                            Metric(name=metric, unit="%", gauge=Gauge(data_points=points))
                        ]
                    )
                ],
            )
        ]
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", default="otlp_metrics")
    p.add_argument("--instance", required=True)
    p.add_argument("--metric", default="sqlserver.cpu.utilization")
    p.add_argument("--values", required=True)
    p.add_argument("--t0-ns", type=int, default=time.time_ns() - 60_000_000_000)
    p.add_argument("--step-ns", type=int, default=1_000_000_000)
    p.add_argument("--key")
    a = p.parse_args()
    values = [float(v) for v in a.values.split(",")]
    body = request(a.instance, a.metric, values, a.t0_ns, a.step_ns).SerializeToString()
    producer = Producer({"bootstrap.servers": a.bootstrap, "enable.idempotence": True})
    errors = []
    producer.produce(
        a.topic,
        value=body,
        key=a.key.encode() if a.key else None,
        on_delivery=lambda err, _msg: err and errors.append(str(err)),
    )
    left = producer.flush(30)
    if left or errors:
        print(json.dumps({"error": errors or [f"{left} messages not delivered"]}))
        sys.exit(1)
    print(json.dumps({"produced": 1}))


if __name__ == "__main__":
    main()
