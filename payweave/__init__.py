"""payweave: workflow-orchestrated saga platform for commerce money movement."""

__version__ = "0.1.0"
