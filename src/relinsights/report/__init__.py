"""The relationship report: static, self-contained HTML pages with the widgets of Dynamics relationship
analytics as charts (`relinsights report`).

Modules: `build` (gather and write), `overview` (a tenant's page), `record` (a record's widgets),
`charts` (Vega-Lite specs rendered to SVG offline), `markup` (HTML building blocks).
"""

from relinsights.report.build import ReportError, ReportResult, write_report

__all__ = ["ReportError", "ReportResult", "write_report"]
