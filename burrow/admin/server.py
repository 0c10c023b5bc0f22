"""``burrow admin -c conf/jobs.toml [--bind 127.0.0.1:8080]``: the admin on its own.

Served by uvicorn. It reads the database and never migrates it: a schema that is
missing, behind or ahead of this burrow is refused, as is a bind to anything but
a loopback address without ``[admin] password``; with a password every request
but the health probes needs HTTP basic auth. Bad input is one line on stderr and
exit status 2, like every burrow command.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import sys
from collections.abc import Sequence

import uvicorn

from burrow.admin import basic_auth, create_app
from burrow.backends import backend_for
from burrow.config import DSN_ENV, SCHEMA_ENV, AdminConfig, Config, DatabaseConfig, load_config
from burrow.errors import BurrowError, ConfigError
from burrow.notation import parse_bind, shown_dsn
from burrow.queue import JobQueue

EXIT_USAGE = 2
MIGRATE_FIRST = "migrate it first (start a supervisor, or run `{command}`); the admin never migrates"


def build_parser(prog: str = "burrow admin") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Serve burrow's web admin.")
    parser.add_argument("-c", "--config", help="path to jobs.toml ([database], [admin])")
    parser.add_argument("--dsn", help="the database; overrides [database] dsn and BURROW_DATABASE_DSN")
    parser.add_argument("--schema", help="PostgreSQL schema of burrow's tables; overrides [database] schema")
    parser.add_argument("--bind", metavar="HOST:PORT", help="where to listen; overrides [admin] bind (127.0.0.1:8080)")
    return parser


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name may resolve to anything: treat it as public


def settings(args: argparse.Namespace) -> Config:
    """The config file (if any) with the command line's overrides applied."""
    if args.config is not None:
        config = load_config(args.config, dsn_override=args.dsn, dsn_option="--dsn")
    else:  # as every other command: --dsn, then BURROW_DATABASE_DSN (main checked one is there)
        dsn = args.dsn or os.environ.get(DSN_ENV) or ""
        schema = None if args.dsn else os.environ.get(SCHEMA_ENV) or None
        config = Config(database=DatabaseConfig(dsn=dsn, schema=schema))
    database, admin = config.database, config.admin
    if args.schema is not None:
        database = DatabaseConfig(dsn=database.dsn, schema=args.schema)
    if args.bind is not None:
        try:
            admin = AdminConfig(bind=parse_bind(args.bind), password=admin.password, viewer_password=admin.viewer_password)
        except ValueError as exc:
            raise ConfigError(f"--bind: {exc}") from None
    host = admin.bind[0]
    if admin.viewer_password is not None and admin.password is None:
        raise ConfigError("[admin] viewer_password needs [admin] password too (the viewer's is the read-only one)")
    if admin.password is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve the admin on {host}, which is not a loopback address, without a password: "
            "set [admin] password (then every request needs it) or bind 127.0.0.1"
        )
    return dataclasses.replace(config, database=database, admin=admin)


def connect(config: Config, migrate_command: str | None = None) -> JobQueue:
    """The queue of ``config``, whose schema must be this burrow's: the admin reads,
    it never migrates (a supervisor or ``burrow migrate`` does). Processes count as
    stale after the config's lease timeout, as the supervisors judge them.
    ``migrate_command`` is the hint's ``burrow migrate`` (default: ``--dsn`` naming
    the database)."""
    database = config.database
    shown = shown_dsn(database.dsn)
    try:
        backend = backend_for(
            database.dsn, schema=database.schema, pooled=database.pooled, listen_dsn=database.listen_dsn
        )
    except BurrowError as exc:  # a malformed URL (a port that is no number), a missing directory
        raise ConfigError(f"database {shown}: {exc}") from None
    try:
        status = backend.schema_status()
    except BurrowError as exc:
        backend.close()
        raise ConfigError(f"database {shown}: {exc}") from None
    if status.database_exists and status.version == status.latest:
        return JobQueue(backend, lease_s=config.supervisor.lease_timeout_s)
    backend.close()
    if migrate_command is None:
        migrate_command = f"burrow migrate --dsn {shown}" + (f" --schema {database.schema}" if database.schema else "")
    migrate_first = MIGRATE_FIRST.format(command=migrate_command)
    if not status.database_exists:
        problem = f"does not exist yet: {migrate_first}"
    elif status.version < status.latest:
        problem = f"is at schema version {status.version}, this burrow needs {status.latest}: {migrate_first}"
    else:
        problem = f"is at schema version {status.version}, newer than this burrow ({status.latest}): upgrade burrow"
    raise ConfigError(f"database {shown} {problem}")


def main(argv: Sequence[str] | None = None, prog: str = "burrow admin") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.config is None and args.dsn is None and not os.environ.get(DSN_ENV):
        parser.error(f"give -c PATH (a jobs.toml), --dsn DSN, or set {DSN_ENV}")
    try:
        config = settings(args)
        from_file = args.config is not None and not (args.dsn or args.schema or os.environ.get(DSN_ENV))
        queue = connect(config, f"burrow migrate -c {os.path.abspath(args.config)}" if from_file else None)
    except BurrowError as exc:
        print(f"{prog}: " + " ".join(str(exc).splitlines()), file=sys.stderr)
        return EXIT_USAGE
    password = config.admin.password
    viewer = config.admin.viewer_password
    app = create_app(queue, auth=basic_auth(password, viewer_password=viewer) if password else None)
    host, port = config.admin.bind
    try:
        uvicorn.run(app, host=host, port=port, lifespan="off", ws="none", server_header=False, log_level="info")
    finally:
        queue.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
