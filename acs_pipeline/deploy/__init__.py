"""Dagster instance plugins, named in the instance files and loaded with the instance (the
webserver, the daemon, each run), not part of the code location: definitions.py loads only defs/.
`ecs_launcher` is the AWS deployment's run launcher (docker/dagster.aws.yaml; needs the `deploy`
extra), `sqlite_events` the local instance's event log (dagster.local.yaml). They import nothing
else of the package; like Dagster's own storages they may read DAGSTER_HOME."""
