"""A topic whose {meter_id} part breaks the identifier rule names no meter (issue 22 item 6)."""

from __future__ import annotations

import asyncio

import pytest

from drivers.mqtt import MqttSettings, MqttSubscriber, TopicTemplate
from drivers.samples import RawPayload
from simulators.broker import Broker
from simulators.mqtt import publish_balance

TEMPLATE = "payg/{meter_id}/balance"


@pytest.mark.parametrize("topic", [
    "payg/../balance", "payg/M..1/balance", "payg/M 1/balance", "payg/M*1/balance", "payg/M?1/balance",
    "payg/M%2F1/balance", "payg/.x/balance", "payg/M\t1/balance", "payg/" + "M" * 65 + "/balance",
])
def test_a_topic_whose_meter_part_breaks_the_rule_names_no_meter(topic: str) -> None:
    template = TopicTemplate(TEMPLATE)
    assert template.match(topic) is None
    assert template.meter_id(topic) is None
    assert TopicTemplate("site/meter-{meter_id}").meter_id(topic.replace("payg/", "site/meter-", 1)
                                                           .removesuffix("/balance")) is None


def test_valid_meter_ids_still_match_and_render() -> None:
    template = TopicTemplate(TEMPLATE)
    for meter_id in ("P-00003", "M-0001", "edge.1:7", "SN_0001", "M" * 64):
        assert template.meter_id(f"payg/{meter_id}/balance") == meter_id
        assert template.render(meter_id=meter_id) == f"payg/{meter_id}/balance"
    with pytest.raises(ValueError, match=r"meter_id 'M\.\.1' contains '\.\.'"):
        template.render(meter_id="M..1")


async def test_the_subscriber_never_hands_on_a_bad_meter_id(mqtt_broker: Broker) -> None:
    """Even with no list of known meters, a message on payg/M..1/balance comes out with no meter id
    (the normaliser makes it an unknown_meter dead letter) and is counted as unknown."""
    got: list[RawPayload] = []

    async def sink(raw: RawPayload) -> None:
        got.append(raw)
        if raw.ack is not None:
            raw.ack()

    settings = MqttSettings(host=mqtt_broker.host, port=mqtt_broker.port, client_id="gw-ids",
                            reconnect_min=0.05, reconnect_max=0.3)
    sub = MqttSubscriber(settings, [TEMPLATE], sink, known_meters=None)
    task = asyncio.create_task(sub.run())
    try:
        await sub.wait_connected(10)
        for meter_id in ("M..1", "M 1", "P-0001"):
            await publish_balance(mqtt_broker.host, mqtt_broker.port, meter_id, b"1")
        async with asyncio.timeout(10):
            while len(got) < 3:  # noqa: ASYNC110 - the subscriber's task appends
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [(r.topic, r.meter_id) for r in got] == [
        ("payg/M..1/balance", None), ("payg/M 1/balance", None), ("payg/P-0001/balance", "P-0001")]
    assert sub.health()["unknown_meter_messages"] == 2
    assert sub.recent("M..1") == []
