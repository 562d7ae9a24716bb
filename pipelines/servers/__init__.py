"""`kiln up`'s servers: starting and stopping them (control), signing in (auth), and who may
do what on the registry (roles)."""
