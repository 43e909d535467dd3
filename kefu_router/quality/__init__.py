"""The quality report: how the model agrees with agents' final labels, and how its predictions drift.

    figures.py     the figures as plain data (the JSON of GET /v1/quality), from the store's rows
    report.py      the self-contained HTML page: a Jinja2 template with matplotlib PNGs inlined as base64
    templates/     quality.html.j2

figures.py needs nothing beyond the runtime install; report.py needs Jinja2 and matplotlib (serve extra).
"""
