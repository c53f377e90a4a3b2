"""When to read a node's row while its stream says nothing about it.

A generation follows its node on the shared stream, but a terminal event can
go missing (or go to a node id the server chose itself), so a node the stream
is quiet about has its row read now and then. Two rules make that read happen
whatever the call's timeout:

* the interval is the client's ``stall_interval``, shortened to a quarter of
  the call's time, so a call with a 3 s timeout reads the row too;
* the last read is due half an interval before the deadline, so a call never
  times out on a row it did not look at.

Quiet means no text: only chunks (and row reads) restart the wait, not the
status or unknown events a busy server may send many times a second.
"""

from __future__ import annotations

__all__ = ["RowChecks"]


class RowChecks:
    """The schedule of row reads for one node, from ``now`` to ``deadline``."""

    __slots__ = ("_deadline", "_final_at", "_final_done", "_quiet_since", "interval")

    def __init__(self, stall_interval: float, now: float, deadline: float) -> None:
        self.interval = min(stall_interval, max(deadline - now, 0.0) / 4) or stall_interval
        self._deadline = deadline
        self._final_at = deadline - self.interval / 2
        self._final_done = False
        self._quiet_since = now

    def heard(self, now: float) -> None:
        """The stream brought news of the node (text, or a row was just read)."""
        self._quiet_since = now

    def wake_at(self) -> float:
        """Until when to wait for the node's next event before reading its row
        (the deadline itself once the last read is done)."""
        due = self._quiet_since + self.interval
        if self._final_done:
            return min(due, self._deadline)
        return min(due, self._final_at)

    def row_due(self, now: float) -> bool:
        """Whether a wait that ended at ``now`` with nothing heard calls for a
        row read (``False``: the deadline has come, with the last read done)."""
        if now >= self._deadline:
            return False
        if now >= self._final_at:
            self._final_done = True
        self._quiet_since = now
        return True
