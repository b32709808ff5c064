"""Stage 9, the report: report.md and the plots of a run directory."""

from graftsearch.report._report import write_report

__all__ = ['write_report']
