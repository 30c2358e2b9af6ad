"""testmon-live's pytest side: recorder, hub and probes. Never imports Textual or Rich."""

__version__ = "0.1.0"
