"""Credentials the CLI issues and the auth plugins check: API keys and signed JWTs.

Pure helpers (no HTTP, no plugin manager): `apikeys` generates, parses and hashes API keys,
`keystore` stores them in table `api_keys`, `tokens` signs JWTs. The plugins in `plugins/`
reach the ones they need through the public face `runtime`.
"""
