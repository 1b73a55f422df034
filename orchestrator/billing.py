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
    return Rates(
        currency=merged.get("currency", ""),
        hourly_rate=merged.get("hourly_rate"),
        storage_gb_month=merged.get("storage_gb_month"),
    )


def enclosing(ops: list[dict]) -> dict[int, int]:
    """Given operations, return {id: id of the operation it ran inside} for those run inside another of the same
    person, machine and site (a promotion's mandatory backup; the site lock keeps others apart): their time is
    already part of the outer one's."""
    groups: dict[tuple, list[dict]] = {}
    for op in sorted(ops, key=lambda op: op["id"]):
        groups.setdefault((op["actor"], op["host"], op["site"]), []).append(op)
    inside = {}
    for group in groups.values():
        active: list[dict] = []  # earlier operations still running when this one started
        for op in group:
            active = [o for o in active if (o["finished_at"] or "~") >= op["started_at"]]
            outer = next(
                (
                    o
                    for o in active
                    if o["started_at"] <= op["started_at"] and (o["finished_at"] or "~") >= (op["finished_at"] or "~")
                ),
                None,
            )
            if outer is not None:
                inside[op["id"]] = outer["id"]
            active.append(op)
    return inside


def total_seconds(ops: list[dict]) -> float:
    """Given a task's operations, return the time they took, each operation counted once."""
    inside = enclosing(ops)
    return sum(op["duration"] or 0 for op in ops if op["id"] not in inside)


def task_cost(inventory, ops: list[dict]) -> str:
    """Given the inventory and a task's operations, return their time's cost as text (`135.00 EUR`), each
    operation at its site's rate and counted once; '' when no rate applies."""
    costs, currency, inside = [], "", enclosing(ops)
    for op in (op for op in ops if op["id"] not in inside):
        rates = rates_for(inventory, op["site"])
        cost = rates.time_cost(op["duration"])
        if cost is not None:
            costs.append(cost)
            currency = currency or rates.currency
    return f"{sum(costs):,.2f} {currency}".strip() if costs else ""
