"""Report layer: one self-contained HTML page (inline SVG figures, inline script) built from the store.

``build_report(db, out_dir)`` writes ``out_dir/index.html``; ``build_report(db, out_dir, study=NAME)``
writes that study's page alone. Nothing here trains: every table, figure and finding is
recomputed from the stored runs with the same analysis and plot functions the CLI uses.
"""

from batchlab.report.build import build_report

__all__ = ["build_report"]
