"""Event ids back in order. Ids are allocated when an event is inserted, but transactions commit
(and publish) in any order, so an id that arrives ahead of a missing lower one is held until
the lower one arrives or, once it has waited the gap wait, the caller has looked the gap up in
the database (committed but never published) and what is still missing is given up (rolled
back, or still uncommitted). Everything up to `released` has therefore been handed on, and a
reconnect that replays "after N" from the database misses nothing. An id given up on that
turns up later is still handed on, marked late."""

import time
from collections import OrderedDict
from dataclasses import dataclass

# Ids given up on that are remembered, to mark them late if they turn up after all.
ABANDONED_LIMIT = 10_000


@dataclass(frozen=True)
class Release:
    """An event to hand on now, on these topics."""

    id: int | None
    event: object
    topics: frozenset
    late: bool = False


@dataclass
class _Held:
    event: object
    topics: set
    since: float


class EventOrder:
    def __init__(self, released, gap_wait_seconds, clock=time.monotonic):
        self.released = released
        self.gap_wait_seconds = gap_wait_seconds
        self._clock = clock
        self._held = {}
        self._abandoned = OrderedDict()

    def arrived(self, event_id, event, topics):
        """What may be handed on now that this event arrived on these topics."""
        if event_id is None or event_id <= self.released:
            return [Release(event_id, event, frozenset(topics), late=event_id in self._abandoned)]
        self._hold(event_id, event, topics)
        return self._ready()

    def overdue_gap(self):
        """(after, upto): the ids to look up because the lowest held one has waited long
        enough; None while nothing has."""
        if not self._held:
            return None
        lowest = min(self._held)
        if self._clock() - self._held[lowest].since < self.gap_wait_seconds:
            return None
        return self.released, lowest - 1

    def close_gap(self, upto, found):
        """Give up on whatever of the ids up to `upto` has not arrived and is not among
        `found`, (id, event, topics) as looked up; returns (releases, ids given up)."""
        for event_id, event, topics in found:
            if event_id > self.released:
                self._hold(event_id, event, topics)
        start = max(self.released + 1, upto + 1 - ABANDONED_LIMIT)
        missing = [event_id for event_id in range(start, upto + 1) if event_id not in self._held]
        for event_id in missing:
            self._abandoned[event_id] = True
        while len(self._abandoned) > ABANDONED_LIMIT:
            self._abandoned.popitem(last=False)
        releases = [self._release(event_id)
                    for event_id in sorted(i for i in self._held if i <= upto)]
        self.released = max(self.released, upto)
        return releases + self._ready(), missing

    def _hold(self, event_id, event, topics):
        held = self._held.setdefault(event_id, _Held(event, set(), self._clock()))
        held.topics.update(topics)

    def _ready(self):
        releases = []
        while self.released + 1 in self._held:
            self.released += 1
            releases.append(self._release(self.released))
        return releases

    def _release(self, event_id):
        held = self._held.pop(event_id)
        return Release(event_id, held.event, frozenset(held.topics))
