"""Reports: findings, unit costs, digests, exports and the HTML report, from the lake's tables.

Pure functions over frames (``reports.findings``, ``reports.unit_economics``,
``reports.digest``, ``reports.exports``, ``reports.html_report``); the I/O is in three small
functions that take their destination: ``reports.exports.write_exports``,
``reports.html_report.write_html_report`` and ``reports.slack.send_digest``. See
``docs/reports.md``. This package never imports ``collector`` or ``allocator``.
"""
