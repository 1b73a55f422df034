"""Cost per task and per site from the inventory's `billing` rates (globally, a site's own block merged over)."""
from __future__ import annotations

from dataclasses import dataclass

GB = 10**9


@dataclass(frozen=True)
class Rates:
    """What time and storage cost; a rate left unset means that cost is not shown."""

    currency: str = ""
    hourly_rate: float | None = None
    storage_gb_month: float | None = None

    def time_cost(self, seconds: float | None) -> float | None:
        """Given seconds of operation time, return what they cost (None without an hourly rate)."""
        if self.hourly_rate is None or seconds is None:
            return None
        return round(seconds / 3600 * self.hourly_rate, 2)

    def storage_cost(self, size: int | None) -> float | None:
        """Given bytes stored, return their monthly cost (None without a storage rate)."""
        if self.storage_gb_month is None or size is None:
            return None
        return round(size / GB * self.storage_gb_month, 2)

    def money(self, amount: float | None) -> str:
        """Given an amount, return it as people read it: `12.50 EUR` ('' for None)."""
        return "" if amount is None else f"{amount:,.2f} {self.currency}".strip()


def rates_for(inventory, site: str | None = None) -> Rates:
    """Given the inventory and a site name (or None), return the rates in force there."""
    merged = dict(getattr(inventory, "billing", None) or {})
    known = site and inventory.sites.get(site)
    if known:
        merged |= known.raw.get("billing") or {}
    return Rates(currency=merged.get("currency", ""), hourly_rate=merged.get("hourly_rate"),
                 storage_gb_month=merged.get("storage_gb_month"))


def task_cost(inventory, ops: list[dict]) -> str:
    """Given the inventory and a task's operations, return their time's cost as text (`135.00 EUR`), each
    operation at its site's rate; '' when no rate applies."""
    costs, currency = [], ""
    for op in ops:
        rates = rates_for(inventory, op["site"])
        cost = rates.time_cost(op["duration"])
        if cost is not None:
            costs.append(cost)
            currency = currency or rates.currency
    return f"{sum(costs):,.2f} {currency}".strip() if costs else ""
