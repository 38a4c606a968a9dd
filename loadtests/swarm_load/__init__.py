"""The Swarm traffic model for Locust: who calls what, how often, with which credentials.

`locustfile.py` imports the user classes from here (built on `base`); `config` reads the
environment, `world` discovers (and creates) the data the users work on before they start,
`api` is the one place requests are made and judged, and `gate` turns the statistics into
go/no-go.
"""
