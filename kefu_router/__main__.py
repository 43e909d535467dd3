"""`python -m kefu_router ...` is the `kefu-router` command."""

from kefu_router.cli import app

app()
