"""Event ids put back in order (app/events/ordering.py), with integers and a hand-turned clock."""

from app.events import ordering
from app.events.ordering import EventOrder, Release

WAIT = 2.0


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def order_from(released=0):
    clock = Clock()
    return EventOrder(released, WAIT, clock=clock), clock


def ids(releases):
    return [release.id for release in releases]


def test_ids_in_order_are_handed_on_as_they_arrive():
    order, _ = order_from(released=10)
    assert order.arrived(11, "a", ["user.1"]) == [Release(11, "a", frozenset({"user.1"}))]
    assert ids(order.arrived(12, "b", ["user.1"])) == [12]
    assert order.released == 12
    assert order.overdue_gap() is None


def test_an_id_ahead_of_a_gap_waits_for_the_gap_to_fill_then_both_go_in_order():
    order, _ = order_from()
    assert order.arrived(2, "second", ["user.1"]) == []
    assert order.arrived(3, "third", ["user.1"]) == []
    assert order.released == 0
    assert [(r.id, r.event) for r in order.arrived(1, "first", ["user.1"])] == [
        (1, "first"), (2, "second"), (3, "third")]
    assert order.released == 3


def test_a_gap_is_looked_up_only_once_the_lowest_held_id_has_waited_the_configured_wait():
    order, clock = order_from(released=4)
    order.arrived(7, "g", ["user.1"])
    clock.now += 1.5
    order.arrived(8, "h", ["user.1"])
    clock.now += 0.25
    assert order.overdue_gap() is None
    clock.now += 0.25
    assert order.overdue_gap() == (4, 6)


def test_a_gap_that_times_out_gives_up_what_is_missing_and_releases_what_was_found():
    order, clock = order_from(released=4)
    order.arrived(8, "h", ["user.1"])
    clock.now += WAIT
    after, upto = order.overdue_gap()
    # The lookup found 6 (committed, its publish lost); 5 and 7 are rolled back or uncommitted.
    releases, given_up = order.close_gap(upto, [(6, "f", ["submission.2", "user.1"])])
    assert (after, upto, given_up) == (4, 7, [5, 7])
    assert releases == [Release(6, "f", frozenset({"submission.2", "user.1"})),
                        Release(8, "h", frozenset({"user.1"}))]
    assert order.released == 8
    assert order.overdue_gap() is None


def test_an_id_given_up_on_that_turns_up_later_is_handed_on_at_once_marked_late():
    order, clock = order_from()
    order.arrived(2, "b", ["user.1"])
    clock.now += WAIT
    order.close_gap(1, [])
    assert order.arrived(1, "a", ["user.1"]) == [Release(1, "a", frozenset({"user.1"}), late=True)]


def test_a_duplicate_of_an_id_already_handed_on_goes_on_again_not_late_for_streams_to_drop():
    order, _ = order_from()
    order.arrived(1, "a", ["user.1"])
    assert order.arrived(1, "a", ["submission.5"]) == [Release(1, "a", frozenset({"submission.5"}))]
    assert order.released == 1


def test_a_held_id_arriving_on_several_topics_is_released_once_on_all_of_them():
    order, _ = order_from()
    order.arrived(2, "b", ["submission.5"])
    order.arrived(2, "b", ["user.1"])
    order.arrived(2, "b", ["user.1"])
    releases = order.arrived(1, "a", ["user.1"])
    assert releases[1] == Release(2, "b", frozenset({"submission.5", "user.1"}))
    assert ids(releases) == [1, 2]


def test_an_event_without_an_id_is_handed_on_at_once():
    order, _ = order_from(released=3)
    order.arrived(5, "held", ["user.1"])
    assert order.arrived(None, "ping", ["user.1"]) == [Release(None, "ping",
                                                               frozenset({"user.1"}))]
    assert order.released == 3


def test_a_gap_filled_while_it_was_being_looked_up_is_neither_sent_twice_nor_rewound():
    order, clock = order_from()
    order.arrived(3, "c", ["user.1"])
    clock.now += WAIT
    _, upto = order.overdue_gap()
    # While the database is asked, the publishes arrive after all.
    assert ids(order.arrived(1, "a", ["user.1"])) == [1]
    assert ids(order.arrived(2, "b", ["user.1"])) == [2, 3]
    releases, given_up = order.close_gap(upto, [(1, "a", ["user.1"]), (2, "b", ["user.1"])])
    assert (releases, given_up, order.released) == ([], [], 3)
    assert ids(order.arrived(4, "d", ["user.1"])) == [4]


def test_a_lower_id_arriving_during_the_lookup_goes_out_in_order_with_what_was_found():
    order, clock = order_from()
    order.arrived(4, "d", ["user.1"])
    clock.now += WAIT
    _, upto = order.overdue_gap()
    assert order.arrived(2, "b", ["user.1"]) == []
    releases, given_up = order.close_gap(upto, [(3, "c", ["user.1"])])
    assert (ids(releases), given_up) == ([2, 3, 4], [1])


def test_a_later_gap_waits_its_own_time_from_when_its_next_id_arrived():
    order, clock = order_from()
    order.arrived(2, "b", ["user.1"])
    clock.now += WAIT
    _, upto = order.overdue_gap()
    order.close_gap(upto, [])
    clock.now += 10
    order.arrived(4, "d", ["user.1"])
    assert order.overdue_gap() is None
    clock.now += WAIT
    assert order.overdue_gap() == (2, 3)


def test_only_the_most_recent_ids_given_up_are_remembered(monkeypatch):
    monkeypatch.setattr(ordering, "ABANDONED_LIMIT", 3)
    order, clock = order_from()
    order.arrived(10, "j", ["user.1"])
    clock.now += WAIT
    _, given_up = order.close_gap(9, [])
    assert given_up == [7, 8, 9]
    assert order.arrived(8, "h", ["user.1"])[0].late is True
    assert order.arrived(2, "b", ["user.1"])[0].late is False
