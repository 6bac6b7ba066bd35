"""Dagster instance plugins of the deployment (named in docker/dagster.aws.yaml, loaded by the
daemon), not part of the code location: definitions.py loads only defs/. They need the `deploy`
extra and import nothing else of the package."""
