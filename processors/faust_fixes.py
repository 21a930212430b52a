"""A pinned patch for faust-streaming 0.15.3's consumer: no silent drop of unprocessed records.

The bug (upstream faust-streaming/faust#596 and relatives): Faust's fetch loop
(``Consumer._drain_messages``) remembers, per partition, the offset of the last record it handed to
the streams (``_read_offset``) and silently drops any later record below it (a ``log.dev`` line,
invisible at any normal level). When recovery (or a rebalance) seeks a partition back to its
committed offset while the loop is still busy with a batch fetched *before* that seek, the loop
writes the stale batch's offsets back over the seek's reset. The records re-read from the seek
position then fall below that stale offset and are dropped; any of them that never reached an
agent is lost for this run and, since it is never acknowledged, the committed offset stops there.
``citystream worker`` showed it as a stall after a restart with a backlog (frames counter stuck
two short, nothing logged).

The patch, applied once per process by :func:`apply` (``create_app`` calls it):

* every seek Faust makes (``perform_seek``, ``seek``, ``seek_wait``, partitions revoked) bumps a
  per-partition seek counter; the fetch loop advances ``_read_offset`` only for records fetched
  after the partition's latest seek, so a stale batch can no longer overwrite a seek (its records
  may be delivered twice instead: at least once, duplicates carry the same ``event_id``);
* a record the loop drops although it never handed it to the streams, it is not acknowledged and
  it lies at or above the committed offset, is reported: a WARNING with topic, partition and
  offset, the listeners registered with :func:`watch` (the worker counts
  ``citystream_worker_dropped_records_total``), and the partition is sought back to that record so
  it is read again (self-healing instead of a stall).

The stall on restart and rebalance (citystream issue 14; upstream faust-streaming/faust#629 and
#216/#253, which fixed the order only for apps without tables): when recovery ends,
``Recovery.on_recovery_completed`` resumes the stream partitions, seeks them to their committed
offsets and then calls ``app.flow_control.resume()``, which *clears every agent's queue*. The fetch
loop is already running there (its flow was resumed to read the changelogs), so records fetched
after the seek can sit in an agent's queue when it is cleared: read, never processed, never
acknowledged. Upstream, the partition's commit then stops at that offset for good (a backlog
fetched in one batch leaves nothing to fetch: the watchdog's stall); with the stale-seek guard
above, the next record looked like a gap over the cleared ones and ``_add_gap`` made them
committable (an offset committed with no output). Two more changes, applied with the first:

* ``FlowControlEvent.resume`` no longer clears the queues (mode-streaming 0.7.1). Faust clears them
  itself when partitions are revoked (``flow_control.clear()``, before any seek), and a stream skips
  events of an older generation, so what a queue holds at a resume was fetched for the current
  assignment: it is processed (records fetched before the seek come again after it: duplicates with
  the same ``event_id``, never a loss);
* a gap (offsets the fetcher skipped: compaction, transaction markers) is recorded only over offsets
  the loop never handed to the streams, and never includes the record being delivered, so the gap
  logic cannot make an unprocessed record committable (a record counts as handed over only when the
  conductor finished with it, not when a rebalance's ``suspend_flow`` cut the hand-over short).

Flow control itself (checked, ``tests/processors/test_flow_control.py``): a partition removed by
``Consumer.on_buffer_full`` comes back only through its queue's pending pressure-drop callback, which
``clear()`` keeps; it fires when the agent's get finds the queue at or below 40 % of
``stream_buffer_maxsize`` (4096 by default here, high mark 3276). Recovery re-activates every
assigned partition anyway (``resume_partitions``), so this path cannot explain a stall after a
restart or rebalance with backlogs of a few hundred frames; and the conductor awaits a full queue,
so a saturated agent holds back every topic (head-of-line blocking, not a stall).

It replaces Faust internals, so it is pinned: with another faust-streaming or mode-streaming version it
is not applied and :func:`apply` logs an ERROR saying so (check the fix upstream, then re-pin or drop it).
Records below the committed offset (already processed and committed) are still dropped quietly.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any, cast

log = logging.getLogger(__name__)

PINNED_VERSION = "0.15.3"
PINNED_MODE_VERSION = "0.7.1"
DELIVERED_PRUNE_AT = 4096
DropListener = Callable[[str, int, int], None]

_listeners: weakref.WeakKeyDictionary[Any, list[DropListener]] = weakref.WeakKeyDictionary()
_state: dict[str, Any] = {"applied": False, "version": None}
#: Both True in production. Reproductions set them False to see upstream's behaviour with drops reported.
guard_stale_writes = True
reread_dropped = True
#: True in production: a gap never covers records the loop delivered nor the one it is delivering.
exact_gaps = True


def faust_version() -> str:
    """The installed faust-streaming version."""
    import faust

    return str(faust.__version__)


def mode_version() -> str:
    """The installed mode-streaming version (its ``mode.__version__`` is not maintained)."""
    from importlib.metadata import version

    return version("mode-streaming")


def upstream_drain_messages() -> Any:
    """Faust's own ``Consumer._drain_messages`` (the current one while the patch is not applied)."""
    from faust.transport import consumer as fc

    return _state.get("upstream_drain_messages") or fc.Consumer._drain_messages


def upstream_flow_resume() -> Any:
    """mode's own ``FlowControlEvent.resume`` (which clears the managed queues)."""
    from mode.utils.queues import FlowControlEvent

    return _state.get("upstream_flow_resume") or FlowControlEvent.resume


def _resume_keeping_queues(self: Any) -> None:
    """``FlowControlEvent.resume`` without clearing the queues (Faust clears them on revocation itself)."""
    self._suspend.clear()
    self._resume.set()


def applied() -> bool:
    """True once the patch is in place in this process."""
    return bool(_state["applied"])


def watch(app: Any, listener: DropListener) -> None:
    """Call ``listener(topic, partition, offset)`` for every unprocessed record ``app``'s consumer drops."""
    _listeners.setdefault(app, []).append(listener)


def apply() -> bool:
    """Patch Faust's consumer (idempotent); False, with an ERROR log, when the version is not the pinned one."""
    if _state["applied"]:
        return True
    version = f"{faust_version()}/{mode_version()}"
    if version != f"{PINNED_VERSION}/{PINNED_MODE_VERSION}":
        if _state["version"] != version:
            log.error("faust consumer fix NOT applied: it is pinned to faust-streaming/mode-streaming %s/%s, found "
                      "%s; records may be dropped silently after a seek (faust-streaming/faust#596) or cleared "
                      "after recovery (faust-streaming/faust#629) - re-check and re-pin "
                      "citystream.processors.faust_fixes", PINNED_VERSION, PINNED_MODE_VERSION, version)
            _state["version"] = version
        return False
    from faust.transport import consumer as fc
    from mode.utils.queues import FlowControlEvent

    _state["upstream_flow_resume"] = FlowControlEvent.resume
    FlowControlEvent.resume = _resume_keeping_queues

    base = fc.Consumer
    _state["upstream_drain_messages"] = base._drain_messages
    base._drain_messages = _drain_messages
    base.perform_seek = _counting_seeks(base.perform_seek, lambda self, args: self.assignment())
    base.seek = _counting_seeks(base.seek, lambda self, args: [args[0]])
    delegate = fc.ThreadDelegateConsumer
    delegate.seek_wait = _counting_seeks(delegate.seek_wait, lambda self, args: list(args[0]))
    base.on_partitions_revoked = _counting_seeks(base.on_partitions_revoked, lambda self, args: list(args[0]),
                                                 forget=True)
    _state.update(applied=True, version=version)
    log.debug("faust consumer fix applied", extra={"faust": version})
    return True


def seek_counts(consumer: Any) -> Counter[Any]:
    """The consumer's per-partition seek counter (created on first use)."""
    counts: Counter[Any] | None = consumer.__dict__.get("_citystream_seeks")
    if counts is None:
        counts = consumer.__dict__["_citystream_seeks"] = Counter()
    return counts


def delivered_offsets(consumer: Any) -> defaultdict[Any, set[int]]:
    """Offsets the fetch loop handed to the streams, per partition, since it was assigned (pruned when committed)."""
    delivered: defaultdict[Any, set[int]] | None = consumer.__dict__.get("_citystream_delivered")
    if delivered is None:
        delivered = defaultdict(set)
        consumer.__dict__["_citystream_delivered"] = delivered
    return delivered


def _note_delivered(consumer: Any, delivered: set[int], tp: Any, offset: int) -> None:
    delivered.add(offset)
    if len(delivered) > DELIVERED_PRUNE_AT:
        committed = consumer._committed_offset[tp]
        if committed is not None:
            delivered.difference_update([o for o in delivered if o < committed])


def _counting_seeks(method: Any, partitions: Callable[[Any, tuple[Any, ...]], Iterable[Any]],
                    forget: bool = False) -> Any:
    """Wrap an async seek-like method so it counts a seek of its partitions before and after it runs.

    ``forget``: the partitions are revoked, so what was delivered from them no longer counts.
    """
    if getattr(method, "_citystream_counts_seeks", False):
        return method

    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            tps = list(partitions(self, args))
        except Exception:  # no assignment yet (consumer not started): nothing fetched to go stale
            tps = []
        counts = seek_counts(self)
        counts.update(tps)
        if forget:
            for tp in tps:
                delivered_offsets(self).pop(tp, None)
        try:
            return await method(self, *args, **kwargs)
        finally:
            counts.update(tps)

    wrapper.__name__ = getattr(method, "__name__", "wrapper")
    wrapper.__doc__ = method.__doc__
    wrapper._citystream_counts_seeks = True  # type: ignore[attr-defined]
    return wrapper


async def _dropped(consumer: Any, tp: Any, offset: int) -> bool:
    """Report a dropped record that was never processed and seek back to it; False for a harmless drop."""
    if consumer._is_changelog_tp(tp) or not consumer.app.topics.acks_enabled_for(tp.topic):
        return False
    committed = consumer._committed_offset[tp]
    if ((committed is not None and offset < committed) or offset in consumer._acked_index[tp]
            or offset in delivered_offsets(consumer)[tp]):
        return False
    log.warning("faust dropped a record it had not processed; reading the partition again from it",
                extra={"topic": tp.topic, "partition": tp.partition, "offset": offset})
    for listener in _listeners.get(consumer.app, []):
        try:
            listener(tp.topic, tp.partition, offset)
        except Exception:
            log.exception("dropped-record listener failed")
    if not reread_dropped:
        return False
    try:
        await consumer.seek(tp, offset)
    except Exception as exc:  # e.g. the partition was revoked meanwhile: the next assignment seeks anyway
        log.warning("cannot seek back to a dropped record", extra={"topic": tp.topic, "partition": tp.partition,
                                                                    "offset": offset, "error": repr(exc)})
        return False
    return True


async def _add_gap(consumer: Any, delivered: set[int], tp: Any, first: int, offset: int) -> None:
    """Record the offsets from ``first`` up to the record at ``offset`` as a gap (committable without an ack).

    Upstream marks ``first..offset``, the delivered record included; with :data:`exact_gaps` the gap
    starts after the records already handed to the streams and ends before ``offset``.
    """
    if not exact_gaps:
        await consumer._add_gap(tp, first, offset)
        return
    for seen in sorted(o for o in delivered if first <= o < offset):
        if first < seen:
            await consumer._add_gap(tp, first, seen - 1)
        first = seen + 1
    if first < offset:
        await consumer._add_gap(tp, first, offset - 1)


async def _drain_messages(self: Any, fetcher: Any) -> None:
    """Faust 0.15.3's ``Consumer._drain_messages`` with the stale-read-offset guard and drop reporting."""
    # Same loop as upstream (faust/transport/consumer.py, BSD-3-Clause), changes marked "citystream".
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    from faust.transport.consumer import CONSUMER_FETCHING

    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    seeks = seek_counts(self)  # citystream
    delivered = delivered_offsets(self)
    guard = guard_stale_writes
    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            fetched_after = seeks.copy()  # citystream: the seeks this batch's records come after
            ait = cast(Any, getmany(timeout=1.0))
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        fresh = not guard or seeks[tp] == fetched_after[tp]  # citystream: fetched after last seek
                        if gap > 1 and r_offset and fresh:
                            if acks_enabled_for(message.topic):
                                await _add_gap(self, delivered[tp], tp, r_offset + 1, offset)  # citystream
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        handing = callback(message)  # citystream: named, to see whether it finished
                        handed = await self.wait_first(handing, self.suspend_flow.wait())
                        if handing in handed.done:  # citystream: not when a rebalance cut the hand-over short
                            _note_delivered(self, delivered[tp], tp, offset)
                        if not guard or seeks[tp] == fetched_after[tp]:  # citystream: a later seek wins
                            set_read_offset(tp, offset)
                    else:
                        self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, message.key, message.value)
                        await _dropped(self, tp, offset)  # citystream: report it, read again from there
                unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)
