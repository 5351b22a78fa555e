"""relinsights: self-hosted relationship analytics for Microsoft 365 sales teams."""

__version__ = "0.1.0"
