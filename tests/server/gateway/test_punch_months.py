"""The gateway's hourly punch-month maintenance (Gateway.maintain_punch_months; the
PostgreSQL side is tests/storage/test_store_partitions.py)."""

from __future__ import annotations

from datetime import date

from lmg.storage import StoreUnavailable
from lmg.storage.api import PunchMonths
from tests.server.conftest import StoreProxy


async def test_the_hourly_punch_month_maintenance_survives_a_failing_store_and_names_held_months(
        start_gateway, caplog):
    # maintain_punch_months runs hourly on every node (PostgreSQL partitions; SQLite does
    # nothing): a store failure is a warning, never the end of the hourly task, and a month
    # kept past its retention is named, since only the province can release it.
    answers: list = [StoreUnavailable("PostgreSQL is down"), PunchMonths(1, (), (date(2026, 1, 1),))]

    class Months(StoreProxy):
        async def maintain_punch_months(self, now_ms):
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    gw = await start_gateway(wrap=Months)
    assert await gw.gateway.maintain_punch_months() is None
    assert "creating or dropping months of punches failed" in caplog.text
    assert await gw.gateway.maintain_punch_months() == PunchMonths(1, (), (date(2026, 1, 1),))
    assert "punch months 2026-01 are past punch_retention_days but kept" in caplog.text
    assert await gw.store.maintain_punch_months(0) == PunchMonths(0, (), ())  # SQLite: nothing to do
