import gevent
import pytest

from kernel.relay import Relay


def drain(relay, timeout=1.0):
    items = []
    while (batch := relay.next_batch(timeout)) is not None:
        items.extend(batch)
    return items


def test_items_arrive_in_order_and_end():
    assert drain(Relay(range(1000), maxsize=8)) == list(range(1000))


def test_the_first_item_comes_at_once_and_the_rest_as_one_batch():
    relay = Relay(["a", "b", "c", "d"])
    gevent.sleep(0)  # the producer runs, queues the first item and steps aside
    assert relay.next_batch(1) == ["a"]
    assert relay.next_batch(1) == ["b", "c", "d"]
    assert relay.next_batch(1) is None
    assert relay.next_batch(1) is None


def test_timeout_gives_an_empty_batch():
    def slow():
        gevent.sleep(0.2)
        yield "late"

    relay = Relay(slow())
    assert relay.next_batch(0.01) == []
    assert relay.next_batch(1) == ["late"]


def test_failure_is_raised_after_the_items_before_it():
    def failing():
        yield "one"
        yield "two"
        raise ValueError("boom")

    relay = Relay(failing())
    gevent.sleep(0)
    assert relay.next_batch(1) == ["one"]
    assert relay.next_batch(1) == ["two"]
    with pytest.raises(ValueError, match="boom"):
        relay.next_batch(1)
    with pytest.raises(ValueError):
        relay.next_batch(1)


def test_close_stops_the_producer_and_closes_its_iterator():
    events = []

    def endless():
        try:
            while True:
                gevent.sleep(0.01)
                yield "tick"
        finally:
            events.append("closed")

    relay = Relay(endless())
    assert relay.next_batch(1)
    relay.close()
    assert events == ["closed"]


def test_close_reaches_a_producer_blocked_on_a_full_queue():
    events = []

    def eager():
        try:
            while True:
                yield "x"
        finally:
            events.append("closed")

    relay = Relay(eager(), maxsize=2)
    gevent.sleep(0.01)  # the producer is now blocked in put()
    relay.close()
    assert events == ["closed"]
