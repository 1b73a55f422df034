"""orch: staging, backup and deployment orchestrator for web agencies."""

__version__ = "0.1.0"
