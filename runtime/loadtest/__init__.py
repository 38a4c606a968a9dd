"""`swarm-runtime loadtest`: the go/no-go gate before cutover (runtime/cli/loadtest.py).

`harness` starts what is measured (embedded PostgreSQL, seed data, credentials, `serve`),
`cpu` samples the CPU the load generator, the server and PostgreSQL use meanwhile, and
`report` turns Locust's CSV into the go/no-go table. The traffic itself is the Locust suite in
`loadtests/`, which this package runs as a subprocess and never imports.
"""
