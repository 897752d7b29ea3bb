"""Prometheus metrics of one gateway, in its own registry (no global state).

Counters and histograms are fed from the pipeline as samples pass; gauges (spool, sink,
broker, meters by state) are read from the running stages at scrape time, so keeping them
costs nothing on the hot path. Cardinality is bounded: no per-meter labels.
"""

from __future__ import annotations

import time
from collections import Counter as CountBy
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway import __version__
from gateway.model import Batch
from gateway.model.samples import PollFailure, RawPayload, RawRegisters
from gateway.runtime.view import GatewayView

NS = "meter_gateway"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.polls = Counter(f"{NS}_polls", "Modbus polls by result", ["result"], registry=r)
        self.poll_latency = Histogram(f"{NS}_poll_latency_seconds", "Time on the wire of successful Modbus polls",
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.mqtt_messages = Counter(f"{NS}_mqtt_messages", "MQTT messages by result", ["result"], registry=r)
        self.deadletters = Counter(f"{NS}_deadletters", "Dead letters by reason", ["reason"], registry=r)
        self.readings = Counter(f"{NS}_readings", "Readings accepted, by quality flag ('none' if unflagged)",
                                ["flag"], registry=r)
        self.readings_by_status = Counter(f"{NS}_readings_status", "Readings accepted, by status", ["status"],
                                          registry=r)
        self.balances = Counter(f"{NS}_balance_updates", "PAYG balance updates accepted", registry=r)
        self.events = Counter(f"{NS}_events", "Events raised, by kind", ["kind"], registry=r)
        self.sink_batch = Histogram(f"{NS}_sink_batch_seconds", "Time to commit one batch to the store",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.sink_rows = Counter(f"{NS}_sink_rows", "Items committed to the store", registry=r)
        #: Counted by the core from what `meter-gateway run`'s supervisor reports (gateway.runtime.core).
        self.process_restarts = Counter(f"{NS}_process_restarts", "Gateway processes (core, api) restarted after "
                                        "they died", ["process"], registry=r)
        self.overruns_seen: dict[str, int] = {}

    def observe_items(self, items: Iterable[object], batch: Batch) -> None:
        """Count what one pipeline pass took in and produced."""
        # Counted here per pass, then added once per label: a labelled child lookup costs
        # microseconds, and a pass can hold thousands of readings.
        polls: CountBy[str] = CountBy()
        payloads = 0
        for item in items:
            if isinstance(item, RawRegisters):
                polls["ok"] += 1
                self.poll_latency.observe(item.latency_s)
            elif isinstance(item, PollFailure):
                polls[item.error.kind] += 1
            elif isinstance(item, RawPayload):
                payloads += 1
        for result, n in polls.items():
            self.polls.labels(result).inc(n)
        dead_payloads = sum(1 for d in batch.deadletters if d.source == RawPayload.SOURCE)
        if payloads:
            self.mqtt_messages.labels("accepted").inc(max(0, payloads - dead_payloads))
            if dead_payloads:
                self.mqtt_messages.labels("deadletter").inc(dead_payloads)
        for reason, n in CountBy(d.reason for d in batch.deadletters).items():
            self.deadletters.labels(reason).inc(n)
        qualities = CountBy(r.quality for r in batch.readings)
        flags: CountBy[str] = CountBy()
        for quality, n in qualities.items():
            for name in quality.names() or ["none"]:
                flags[name] += n
        for flag, n in flags.items():
            self.readings.labels(flag).inc(n)
        for status, n in CountBy(r.status.value for r in batch.readings).items():
            self.readings_by_status.labels(status).inc(n)
        if batch.balances:
            self.balances.inc(len(batch.balances))
        for kind, n in CountBy(e.kind.value for e in batch.events).items():
            self.events.labels(kind).inc(n)

    def observe_sink(self, rows: int, seconds: float) -> None:
        self.sink_rows.inc(rows)
        self.sink_batch.observe(seconds)

    def attach(self, gateway: GatewayView) -> None:
        """Expose the running gateway's state as gauges read at scrape time."""
        self.registry.register(_StateCollector(gateway))


class _StateCollector(Collector):
    def __init__(self, gateway: GatewayView, clock: Callable[[], float] = time.time) -> None:
        self.gw = gateway
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        gw = self.gw
        info = InfoMetricFamily(f"{NS}_build", "Version and identity of this gateway")
        info.add_metric([], {"version": __version__, "gateway_id": gw.config.gateway.id,
                             "storage_mode": gw.store.mode if gw.store else "unknown"})
        yield info
        yield GaugeMetricFamily(f"{NS}_uptime_seconds", "Seconds since the gateway started",
                                value=self.clock() - gw.started_at)
        if gw.spool is not None:
            st = gw.spool.stats()
            yield GaugeMetricFamily(f"{NS}_spool_items", "Items waiting in the spool", value=st.items)
            yield GaugeMetricFamily(f"{NS}_spool_bytes", "Bytes used by the spool", value=st.bytes)
            yield GaugeMetricFamily(f"{NS}_spool_limit_bytes", "The spool's size limit", value=st.max_bytes)
            yield GaugeMetricFamily(f"{NS}_spool_oldest_age_seconds", "Age of the oldest spooled item (0 if empty)",
                                    value=st.oldest_age_s or 0.0)
            yield GaugeMetricFamily(f"{NS}_spool_blocked", "1 while the spool cannot write (disk full, I/O error): "
                                    "intake is paused", value=0.0 if st.blocked is None else 1.0)
            yield CounterMetricFamily(f"{NS}_spool_write_failures", "Spool writes that failed and were retried",
                                      value=st.write_failures)
        if gw.forwarder is not None:
            fw = gw.forwarder.state
            yield GaugeMetricFamily(f"{NS}_sink_up", "1 if the store accepts writes",
                                    value=1.0 if gw.store_ready.is_set() and fw.sink_up else 0.0)
        if gw.pipeline is not None:
            yield GaugeMetricFamily(f"{NS}_pipeline_queue_items", "Samples waiting for the pipeline",
                                    value=gw.pipeline.queue.qsize())
        yield from _links(gw)
        # The same states the status page and /v1/diag show, whatever the meter's protocol.
        health = gw.driver_health()
        skipped = sum(h.skipped for h in health.values())
        meters = GaugeMetricFamily(f"{NS}_meters", "Configured meters by communication state "
                                   "(ok, failing, lost, silent, waiting, inactive)", labels=["state"])
        for state, n in gw.health.counts_by_state(health).items():
            meters.add_metric([state.value], n)
        yield meters
        yield CounterMetricFamily(f"{NS}_poll_overruns", "Polls skipped because the previous poll of the meter "
                                  "was still running", value=skipped)


def _links(gw: GatewayView) -> Iterator[Metric]:
    """Each protocol's link gauge, as its spec names it: one series per link, or one gauge."""
    for protocol, spec in gw.registry.items():
        link = spec.link_metric
        if link is None:
            continue
        mine = [(d.target, d.status(gw.health).connected) for d in gw.drivers_of(protocol)]
        if link.label is None:
            if mine:
                yield GaugeMetricFamily(f"{NS}_{link.name}", link.help, value=1.0 if all(up for _, up in mine) else 0.0)
            continue
        family = GaugeMetricFamily(f"{NS}_{link.name}", link.help, labels=[link.label])
        for target, up in mine:
            family.add_metric([target], 1.0 if up else 0.0)
        yield family
