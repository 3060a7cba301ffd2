"""The admin HTTP side of a node: health and readiness for probes and load balancers.

`http.start_admin(gateway, host, port)` serves /healthz (the process answers) and
/readyz (listeners up, store answering and writable). It listens on loopback unless the
`admin` setting says otherwise. The operations API (tokens, metrics, audit) grows here.
"""
