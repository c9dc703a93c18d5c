"""DataZoneJobRunWatcher: an event trigger for asset watchers, one event per finished job run.

Use it in an ``AssetWatcher``: a DAG scheduled on the asset runs once for
each run of the job that ends (in one of ``statuses``), with the run's result
document as the asset event's payload. See docs/airflow.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
from collections.abc import AsyncIterator, Hashable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from poller._model import JobRunStatus
from poller.airflow._client import DEFAULT_CONN_ID, ClientSpec, aclient_for
from poller.airflow.trigger import triggerer_budget
from poller.errors import InvalidRequestError, PollerError

if TYPE_CHECKING:
    from poller._watching import Listing, Store

__all__ = ["END_STATES", "DataZoneJobRunWatcher", "WatcherStopped"]

# The triggerer imports this module on its event loop: nothing here loads
# botocore; `_load_core` does, in a worker thread (as trigger.py).
_CORE = ("poller._watching",)

#: The end states a watcher announces by default: all six.
END_STATES = tuple(str(s) for s in JobRunStatus if s.is_terminal)
_STORE_PREFIX = "poller.datazone_job_run_watcher"


class WatcherStopped(PollerError):
    """A watcher ended for good: bad settings (no region, an unknown connection) or denied
    access. Its message, one line in the triggerer's log, names the job and the cause."""


def _load_core() -> None:
    for name in _CORE:
        importlib.import_module(name)


def _since(value: datetime | float | str | None) -> float | None:
    """``since`` as epoch seconds (None: when the watcher first starts)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidRequestError(
                f"since: not a timestamp: {value!r} (ISO 8601 or epoch seconds)"
            ) from None
        return _since(when)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(
            f"since must be a datetime, ISO 8601 text or epoch seconds, not {value!r}"
        )
    return float(value)


def _statuses(value: Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    chosen = sorted({str(s).upper() for s in ([value] if isinstance(value, str) else value)})
    unknown = [s for s in chosen if s not in END_STATES]
    if unknown or not chosen:
        raise InvalidRequestError(
            f"statuses must be end states among {', '.join(END_STATES)}, not {unknown or 'none'}"
        )
    return chosen


class _AssetStore:
    """The watcher's ledger in Airflow's asset_state_store (Airflow 3.3), else in memory."""

    def __init__(self, trigger: DataZoneJobRunWatcher, key: str) -> None:
        self._trigger = trigger
        self._key = key
        self._memory: object = None
        self._store = getattr(trigger, "asset_state_store", None)
        if self._store is None:
            self._fallback(
                "no asset_state_store (Airflow before 3.3, or the trigger runs outside a "
                "triggerer): what was announced is kept in memory only"
            )

    def _fallback(self, why: str) -> None:
        self._store = None
        self._trigger.log.warning("DataZone job run watcher: %s", why)

    async def load(self) -> object:
        if self._store is not None:
            try:
                return await _store_call(self._store, "get", self._key, default=None)
            except ValueError:
                self._fallback(
                    "the watcher fires for several assets, and asset_state_store keeps one "
                    "state per asset: what was announced is kept in memory only"
                )
        return self._memory

    async def save(self, value: dict[str, Any]) -> None:
        self._memory = value
        if self._store is not None:
            try:
                await _store_call(self._store, "set", self._key, value)
            except ValueError:
                self._fallback("asset_state_store refused the state: kept in memory only")


async def _store_call(store: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    # aget/aset came with Airflow 3.3.2; 3.3.0 and 3.3.1 have only the blocking ones.
    method = getattr(store, f"a{name}", None)
    if method is not None:
        return await method(*args, **kwargs)
    return await asyncio.to_thread(getattr(store, name), *args, **kwargs)


class DataZoneJobRunWatcher(BaseEventTrigger):
    """Fires one event per run of a DataZone job that reaches an end state, exactly once.

    ``statuses``: the end states to announce (default: all six). ``since``
    (a datetime, ISO 8601 text or epoch seconds): announce runs that ended at
    or after it; default: when the watcher first starts. The connection
    arguments are the sensor's. ``poll_interval``: seconds between two looks
    at the job while one of its runs may be ending (the job's history decides
    when that is; at most 10 minutes apart otherwise). Every argument is a primitive, so the trigger
    round-trips through the metadata database.

    What has been announced is kept in the asset's ``asset_state_store``
    (Airflow 3.3), so a restarted or reassigned watcher announces no run twice
    and still announces the runs that ended while it was down (as long as
    they are on the job's listing pages). Watchers of the same job through
    the same connection share one listing loop in the triggerer.
    """

    def __init__(
        self,
        domain_id: str,
        job_id: str,
        *,
        aws_conn_id: str | None = DEFAULT_CONN_ID,
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: Mapping[str, Any] | None = None,
        statuses: Iterable[str] | None = None,
        since: datetime | float | str | None = None,
        poll_interval: float = 25.0,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Airflow leaves it untyped
        self.domain_id = domain_id
        self.job_id = job_id
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.verify = verify
        self.botocore_config = dict(botocore_config) if botocore_config is not None else None
        self.statuses = _statuses(statuses)
        self.since = _since(since)
        if (
            isinstance(poll_interval, bool)
            or not isinstance(poll_interval, int | float)
            or not 0 < poll_interval < float("inf")
        ):
            raise InvalidRequestError(
                f"poll_interval must be a positive number of seconds, not {poll_interval!r}"
            )
        self.poll_interval = float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and the primitive keyword arguments that rebuild this trigger."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "domain_id": self.domain_id,
                "job_id": self.job_id,
                "aws_conn_id": self.aws_conn_id,
                "region_name": self.region_name,
                "verify": self.verify,
                "botocore_config": self.botocore_config,
                "statuses": self.statuses,
                "since": self.since,
                "poll_interval": self.poll_interval,
            },
        )

    def shared_stream_key(self) -> Hashable | None:
        """Watchers of one job through the same connection share one listing loop."""
        config = json.dumps(self.botocore_config or {}, sort_keys=True, default=repr)
        return (
            _STORE_PREFIX,
            self.domain_id,
            self.job_id,
            self.aws_conn_id,
            self.region_name,
            repr(self.verify),
            config,
            self.poll_interval,
        )

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> Any:
        """Ack mode (Airflow 3.3): the ledgers are saved once Airflow has stored the events."""
        if _Producer is None:  # an Airflow without shared-stream producers
            raise NotImplementedError(f"{cls.__name__} needs Airflow 3.3 for ack mode")
        return _Producer(cls, kwargs)

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """The job's listing loop: one `Listing` each time a run can have ended, forever."""
        await asyncio.to_thread(_load_core)
        from poller._announce import LONGEST, Cadence  # noqa: PLC0415  (see _load_core)
        from poller._limiter import budget_for  # noqa: PLC0415
        from poller._watching import JobWatch  # noqa: PLC0415

        where = f"job {kwargs['job_id']} in domain {kwargs['domain_id']}"
        try:
            spec = ClientSpec(
                kwargs.get("aws_conn_id", DEFAULT_CONN_ID),
                kwargs.get("region_name"),
                kwargs.get("verify"),
                kwargs.get("botocore_config"),
            )
            look = float(kwargs.get("poll_interval", 25.0))
            cadence = Cadence(look=look, longest=max(look, LONGEST))
            client = await aclient_for(spec)
            # Its calls book on the account's budget in this triggerer, shared with every
            # trigger there and set by the same `[poller] max_rps` (docs/airflow.md).
            budget_for(client, **await triggerer_budget())
            since = kwargs.get("since")
            watch = JobWatch(
                kwargs["domain_id"],
                kwargs["job_id"],
                client,
                cadence=cadence,
                # The first listing reads back to this; a watcher whose saved
                # state goes further back asks for more (`JobWatch.need`).
                floor=float(since) if since is not None else _now(),
            )
            async for listing in watch.listings():
                yield listing
        except PollerError as error:
            # One clear line in the triggerer's log, not a retry loop that hides it.
            raise _stopped(where, error) from None

    async def filter_shared_stream(
        self, shared_stream: AsyncIterator[Any]
    ) -> AsyncIterator[TriggerEvent]:
        """This watcher's announcements from the shared listings: one event per finished run.

        In the triggerer the stream runs in ack mode: the watcher's state is
        saved once Airflow has stored the events of a listing (the producer's
        ``advance``), so a triggerer stopped before that announces them again,
        and one stopped after does not.
        """
        async for event in self._announce(shared_stream, deferred=_Producer is not None):
            yield event

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Standalone: this watcher's own listing loop (an Airflow without shared streams).

        The state is saved as each event is handed over.
        """
        kwargs = self.serialize()[1]
        async for event in self._announce(type(self).open_shared_stream(kwargs), deferred=False):
            yield event

    async def _announce(
        self, shared_stream: AsyncIterator[Any], *, deferred: bool
    ) -> AsyncIterator[TriggerEvent]:
        await asyncio.to_thread(_load_core)
        from poller._announce import parse_statuses  # noqa: PLC0415
        from poller._watching import announce, start_ledger  # noqa: PLC0415

        store: Store = _AssetStore(self, self._store_key())
        since = self.since if self.since is not None else _now()
        ledger = await start_ledger(store, since)
        listings = _listings(shared_stream)
        where = f"job {self.job_id} in domain {self.domain_id}"
        self.log.info(
            "Watching DataZone %s for runs ending %s since %s",
            where,
            "/".join(self.statuses or END_STATES),
            datetime.fromtimestamp(ledger.since, UTC).isoformat(),
        )
        try:
            chosen = parse_statuses(self.statuses)
            async for result in announce(listings, chosen, store, ledger, deferred=deferred):
                document = result.to_dict()
                self.log.info(
                    "DataZone job run %s of %s ended %s",
                    document["job_run_id"],
                    where,
                    document["status"],
                )
                yield TriggerEvent(document)
        except WatcherStopped:
            raise
        except PollerError as error:
            raise _stopped(where, error) from None

    def _store_key(self) -> str:
        identity = json.dumps(
            [self.domain_id, self.job_id, self.statuses, self.since], separators=(",", ":")
        ).encode()
        return f"{_STORE_PREFIX}:{hashlib.sha256(identity).hexdigest()[:32]}"


try:
    from airflow.triggers.shared_stream import AdvanceItem, SharedStreamProducer
except ImportError:  # Airflow before 3.3: no shared streams, no ack mode
    _Producer: type[Any] | None = None
else:

    class _ListingProducer(SharedStreamProducer):
        """The shared listing loop in ack mode: a listing is "advanced" once every watcher
        moved past it and Airflow stored the events they derived from it; then their
        ledgers are saved."""

        def __init__(self, trigger: type[DataZoneJobRunWatcher], kwargs: dict[str, Any]):
            self._trigger = trigger
            self._kwargs = kwargs

        async def open_stream(self) -> AsyncIterator[tuple[Any, Any]]:
            async for listing in self._trigger.open_shared_stream(self._kwargs):
                yield listing, listing

        async def advance(self, batch: Sequence[AdvanceItem]) -> None:
            for item in batch:
                # A watcher force-failed on it may not have had its events stored:
                # nothing is saved, and the listing's runs are announced again.
                if item.outcome.failed == 0:
                    await item.broker_payload.stored()

    _Producer = _ListingProducer


def _stopped(where: str, error: PollerError) -> WatcherStopped:
    return WatcherStopped(
        f"the DataZone job run watcher of {where} stopped: {type(error).__name__}: {error}"
    )


async def _listings(stream: AsyncIterator[Any]) -> AsyncIterator[Listing]:
    async for item in stream:
        yield item


def _now() -> float:
    import time  # noqa: PLC0415

    return time.time()
