"""Reports: findings, unit costs, digests, exports and the HTML report, from the lake's tables.

Pure functions over frames (``findings``, ``unit_economics``, ``digest``, ``exports``,
``html_report``); the I/O is in three small functions that take their destination:
``exports.write_exports``, ``html_report.write_html_report`` and ``slack.send_digest``. See
``docs/reports.md``. This package never imports ``collector`` or ``allocator``.
"""
