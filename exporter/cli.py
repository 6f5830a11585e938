"""The `scene7-exporter` command: run, demo, simulate, check-config.

Flags are named as in the Go exporters (`--config.file`, `--web.listen-address`, ...). A
configuration problem ends the process with exit code 2 and one line per problem; an address
that cannot be listened on with exit code 1 and one line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from exporter import APP_NAME, DEFAULT_PORT, __version__
from exporter.config import (
    AccountConfig,
    ConfigError,
    JobLogsConfig,
    PollConfig,
    Settings,
    WebSection,
    load_settings,
    split_listen_address,
)
from exporter.httpserver import ListenError
from exporter.logs import FORMATS, LEVELS, setup_logging

log = logging.getLogger("exporter")

SUBCOMMANDS = ("run", "demo", "simulate", "check-config", "healthcheck")
SIMULATOR_PASSWORD_ENV = "SCENE7_SIMULATOR_PASSWORD"  # noqa: S105 - a variable name
SIMULATOR_ADDRESS = "127.0.0.1:8080"


# The libraries whose version decides behaviour an operator may ask about (`--version`).
KEY_DEPENDENCIES = (
    "httpx", "h11", "prometheus-client", "pydantic", "pydantic-settings", "apscheduler", "lxml", "bcrypt",
)


def version_text() -> str:
    """`--version`, on several lines as node_exporter prints it: the exporter, Python, the
    platform, then the key dependencies."""
    lines = [
        f"{APP_NAME}, version {__version__}",
        f"  python version:    {platform.python_version()} ({platform.python_implementation()})",
        f"  platform:          {sys.platform}/{platform.machine()}",
    ]
    for name in KEY_DEPENDENCIES:
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            found = "not installed"
        lines.append(f"  {name + ':':<18} {found}")
    return "\n".join(lines)


class _VersionAction(argparse.Action):
    """Prints `version_text()` and exits, on every subcommand; computed only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str = "print the version and exit") -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(version_text())
        parser.exit()


def _version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action=_VersionAction)


def _common(parser: argparse.ArgumentParser, *, listen_default: str | None = None) -> None:
    parser.add_argument(
        "--web.listen-address", dest="web.listen_address", action="append",
        help=f"address to listen on (default {listen_default or f':{DEFAULT_PORT}'}"
        + ("" if listen_default else ", every interface of IPv4 and IPv6; repeat it for several") + ")",
    )
    parser.add_argument("--log.level", dest="log.level", choices=list(LEVELS),
                        help="debug, info, warn or error (default info; warning: the same as warn)")
    parser.add_argument("--log.format", dest="log.format", choices=list(FORMATS),
                        help="logfmt or json (default logfmt; text: the same as logfmt)")


def _route_prefix(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--web.route-prefix", dest="web.route_prefix",
                        help="serve every route under this path, e.g. /scene7 behind a reverse proxy (default /)")
    parser.add_argument("--web.telemetry-path", dest="web.telemetry_path",
                        help="path under which to expose metrics (default /metrics)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=APP_NAME, description="Prometheus exporter for Adobe Scene7 IPS job progress."
    )
    _version(parser)
    commands = parser.add_subparsers(dest="command")

    run = commands.add_parser("run", help="poll IPS and serve metrics (the default)")
    _version(run)
    run.add_argument("--config.file", dest="config_file", type=Path, help="YAML configuration file")
    run.add_argument("--web.config.file", dest="web.config_file", type=Path,
                     help="TLS and basic auth, in the exporter-toolkit web configuration format")
    run.add_argument("--shard", dest="shard", help="poll only shard INDEX/TOTAL of the companies")
    _common(run)
    _route_prefix(run)

    demo = commands.add_parser("demo", help="run against the built-in IPS simulator, no account needed")
    _version(demo)
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--jobs", type=int, default=24, help="active jobs in the simulated world")
    _common(demo)
    _route_prefix(demo)

    simulate = commands.add_parser("simulate", help="serve the IPS simulator alone")
    _version(simulate)
    simulate.add_argument("--seed", type=int, default=1)
    simulate.add_argument("--jobs", type=int, default=30, help="active jobs in the simulated world")
    simulate.add_argument("--companies", type=int, default=3)
    simulate.add_argument("--time-scale", type=float, default=1.0, help="speed-up of the world's rates")
    simulate.add_argument("--job-log-backfill-hours", type=float, default=24.0,
                          help="hours of finished jobs in the job logs at start (default 24)")
    simulate.add_argument("--user", default="demo@example.com",
                          help=f"accepted user; the password comes from ${SIMULATOR_PASSWORD_ENV} (default demo)")
    _common(simulate, listen_default=SIMULATOR_ADDRESS)

    health = commands.add_parser(
        "healthcheck", help="ask the running exporter's /healthz, as `run` with the same flags serves it; exit 0 or 1")
    _version(health)
    health.add_argument("--config.file", dest="config_file", type=Path,
                        help="the configuration `run` uses (absent: the defaults, as `demo` has them)")
    health.add_argument("--web.config.file", dest="web.config_file", type=Path)
    health.add_argument("--web.listen-address", dest="web.listen_address", action="append",
                        help="as given to run; the first address is asked")
    health.add_argument("--web.route-prefix", dest="web.route_prefix")
    health.add_argument("--timeout", type=float, default=4.0, help="seconds to wait for the answer (default 4)")
    # run's other flags, accepted so that the same command line works, and not needed here
    for flag in ("--web.telemetry-path", "--log.level", "--log.format", "--shard"):
        health.add_argument(flag, dest=f"ignored{flag}", help=argparse.SUPPRESS)

    check = commands.add_parser("check-config", help="validate the configuration and print it")
    _version(check)
    check.add_argument("--config.file", dest="config_file", type=Path)
    check.add_argument("--web.config.file", dest="web.config_file", type=Path)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    args = list(argv)
    if not args or (args[0] not in SUBCOMMANDS and args[0] not in ("-h", "--help", "--version")):
        args.insert(0, "run")
    return build_parser().parse_args(args)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if "." in k or k == "shard"}


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_args(given)
    except SystemExit as exc:
        if given[:1] == ["healthcheck"] and exc.code == 2:
            return 1  # Docker reserves exit code 2 of a health check
        raise
    try:
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "healthcheck":
            return _healthcheck(args)
        if args.command == "demo":
            settings = _demo_settings(args)
        else:
            settings = load_settings(args.config_file, **_overrides(args))
        if args.command == "check-config":
            return _check_config(settings)
        if not settings.accounts:
            raise ConfigError(["accounts: no IPS account configured; add one to the config file "
                               "(see README.md), or try `scene7-exporter demo`"])
        setup_logging(settings.log.level, settings.log.format)
        if args.command == "demo":
            return asyncio.run(_run_demo(settings, args))
        return asyncio.run(_run(settings, args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{APP_NAME}: invalid configuration: {problem}", file=sys.stderr)
        return 2
    except ListenError as exc:  # not the configuration's fault alone: the address may be free later
        print(f"{APP_NAME}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# Signals whose default action ends the process without a word: logged and ignored instead.
IGNORED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM)


async def until_signalled(reload: Callable[[], Awaitable[None]] | None = None) -> None:
    """Return at the first SIGTERM or SIGINT. SIGHUP calls `reload` (without one it is ignored,
    like the other signals that would end the process silently); each is logged."""
    loop = asyncio.get_running_loop()
    received: asyncio.Queue[signal.Signals] = asyncio.Queue()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, *IGNORED_SIGNALS):
        loop.add_signal_handler(sig, received.put_nowait, sig)
    while (sig := await received.get()) not in (signal.SIGTERM, signal.SIGINT):
        if sig == signal.SIGHUP and reload is not None:
            log.info("SIGHUP: reloading the configuration")
            await reload()
        else:
            log.warning("%s received and ignored", sig.name)
    log.info("stopping (%s)", sig.name)


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    from exporter.app import Exporter

    exporter = Exporter(settings)

    async def reload() -> None:
        try:
            new = load_settings(args.config_file, **_overrides(args))
            await exporter.reload(new)
        except ConfigError as exc:
            log.error("configuration not reloaded, the running one is kept: %s", "; ".join(exc.problems))
            return
        except Exception:  # a bug of ours must not end the process at a SIGHUP
            log.exception("configuration not reloaded, the running one is kept: unexpected error")
            return
        setup_logging(new.log.level, new.log.format)

    try:
        await exporter.start()
        await until_signalled(reload)
    finally:
        await exporter.stop()
    return 0


def _check_config(settings: Settings) -> int:
    """Validate everything `run` would (passwords readable, web config) and print the
    effective settings, secrets masked."""
    from exporter.webconfig import load_web_config

    for account in settings.accounts:
        account.resolve_password(single_account=len(settings.accounts) == 1)
    if settings.web.config_file is not None:
        load_web_config(settings.web.config_file)
    print(json.dumps(settings.model_dump(mode="json"), indent=2))
    print("configuration is valid", file=sys.stderr)
    return 0


# Where `healthcheck` asks when the exporter listens on every interface.
_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - read, not bound


def _healthcheck(args: argparse.Namespace) -> int:
    """0 when the exporter answers /healthz where `run` with these flags and configuration
    serves it: its first listen address (loopback for every interface), under the route prefix,
    over TLS if the web configuration has it, trusting exactly the certificate configured there.
    With basic auth on the probes too, its 401 proves it serves. 1 otherwise, with one line why
    (Docker reserves 2)."""
    import ssl

    import httpx

    from exporter.httpserver import host_port
    from exporter.webconfig import load_web_config

    try:
        config_file = args.config_file if args.config_file is not None and args.config_file.exists() else None
        settings = load_settings(config_file, **{k: v for k, v in _overrides(args).items() if k.startswith("web.")})
        web = load_web_config(settings.web.config_file) if settings.web.config_file else None
    except ConfigError as exc:
        print(f"{APP_NAME} healthcheck: invalid configuration: {exc.problems[0]}", file=sys.stderr)
        return 1
    host, port = split_listen_address(settings.web.listen_addresses[0])
    host = _LOOPBACK.get(host, host)
    verify: ssl.SSLContext | bool = False
    if web is not None and web.ssl_context is not None:
        try:
            verify = ssl.create_default_context(cadata=web.served_certificate() or "")
        except (ssl.SSLError, ValueError) as exc:
            print(f"{APP_NAME} healthcheck: the configured certificate cannot be trusted: {exc}", file=sys.stderr)
            return 1
        verify.check_hostname = False  # the address asked is loopback: the certificate itself is trusted
        verify.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    scheme = "https" if verify else "http"
    url = f"{scheme}://{host_port(host, port)}{settings.web.prefix}/healthz"
    try:
        # trust_env=False: a proxy for IPS (HTTPS_PROXY) must not carry a request to loopback
        answer = httpx.get(url, verify=verify, timeout=args.timeout, trust_env=False)
    except httpx.HTTPError as exc:
        print(f"{APP_NAME} healthcheck: {url}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    guarded = web is not None and web.basic_auth is not None and not settings.web.probes_without_auth
    if answer.status_code == 200 or (guarded and answer.status_code == 401):
        print(f"{APP_NAME} healthcheck: {url}: {answer.status_code}")
        return 0
    print(f"{APP_NAME} healthcheck: {url}: answered {answer.status_code}", file=sys.stderr)
    return 1


def _demo_settings(args: argparse.Namespace) -> Settings:
    overrides = _overrides(args)
    return Settings(
        accounts=[AccountConfig(name="demo", endpoint="http://127.0.0.1:1/placeholder",
                                user="demo@example.com", password="demo")],  # type: ignore[arg-type]  # noqa: S106
        poll=PollConfig(interval=5.0, timeout=4.0),
        job_logs=JobLogsConfig(interval=10.0),
        web=WebSection(listen_address=overrides.get("web.listen_address") or f":{DEFAULT_PORT}",
                       route_prefix=overrides.get("web.route_prefix") or "/",
                       telemetry_path=overrides.get("web.telemetry_path") or "/metrics"),
        log={"level": overrides.get("log.level") or "info",  # type: ignore[arg-type]
             "format": overrides.get("log.format") or "logfmt"},
    )


async def _run_demo(settings: Settings, args: argparse.Namespace) -> int:
    from exporter.app import Exporter
    from exporter.simulator import SimulatorConfig, SimulatorServer

    simulator = SimulatorServer(
        SimulatorConfig(seed=args.seed, jobs=args.jobs, time_scale=30.0), host="127.0.0.1", port=0
    )
    await simulator.start()
    account = settings.accounts[0].model_copy(update={"endpoint": simulator.url})
    exporter = Exporter(settings.model_copy(update={"accounts": [account]}))
    host, _ = split_listen_address(settings.web.listen_addresses[0])
    shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host  # noqa: S104
    try:
        await exporter.start()
        print(f"{APP_NAME} demo: simulated IPS at {simulator.url}", flush=True)
        base = f"http://{shown}:{exporter.port}{settings.web.prefix}"
        print(f"{APP_NAME} demo: jobs page at {base}/, metrics at {base}{settings.web.telemetry_path}", flush=True)
        await until_signalled()
    finally:
        await exporter.stop()
        await simulator.close()
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from exporter.simulator import SimulatorConfig, SimulatorServer

    setup_logging(getattr(args, "log.level") or "info", getattr(args, "log.format") or "logfmt")
    addresses = getattr(args, "web.listen_address") or [SIMULATOR_ADDRESS]
    if len(addresses) > 1:
        print(f"{APP_NAME} simulate: one --web.listen-address only", file=sys.stderr)
        return 2
    host, port = split_listen_address(addresses[0])
    config = SimulatorConfig(
        seed=args.seed, jobs=args.jobs, companies=args.companies, time_scale=args.time_scale,
        job_log_backfill_hours=args.job_log_backfill_hours,
        user=args.user, password=os.environ.get(SIMULATOR_PASSWORD_ENV, "demo"),
    )

    async def serve() -> None:
        server = SimulatorServer(config, host=host, port=port)
        await server.start()
        print(f"IPS simulator at {server.url} (user {config.user})", flush=True)
        try:
            await until_signalled()
        finally:
            await server.close()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
