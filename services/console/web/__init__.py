"""The web console (issue #31): server-rendered pages over the operator functions the
`pressroom` command uses, live through server-sent events, behind users and roles, and the
signed download links of every store. `pressroom console` serves `app.create_app`."""
