"""The web console (issue #31): server-rendered pages over the operator functions the
`pressroom` command uses, live through server-sent events, behind users and roles, and the
signed download links of every store. `pressroom console` serves it."""

from services.console.web.app import create_app

__all__ = ["create_app"]
