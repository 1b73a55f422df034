"""Inventory: YAML files -> schema validation -> typed objects, with lazily resolved secrets.

inventory = load_inventory("inventory.yaml")
env = inventory.site("shinglas").env("production")
password = env.database.password.reveal()   # resolved now, masked from here on
"""

from __future__ import annotations

from .load import load_inventory
from .model import BackupOptions, Database, Environment, Host, Inventory, SchedulerOptions, Site, Storage
from .secrets import Secret

__all__ = [
    "BackupOptions",
    "Database",
    "Environment",
    "Host",
    "Inventory",
    "SchedulerOptions",
    "Secret",
    "Site",
    "Storage",
    "load_inventory",
]
