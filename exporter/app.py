"""Wires the parts into a running exporter: clients, poller, store, exposition, HTTP server.

IPS -> client -> parse -> snapshot (Store) -> exposition -> HTTP. `Exporter` is what `run` and
`demo` start, and what the tests start in-process.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable

from exporter.client import IpsClient, ResponseBudget, RetryPolicy
from exporter.config import AccountConfig, ConfigError, Settings, parse_shard, split_listen_address
from exporter.exposition import Exposition
from exporter.httpserver import HttpServer, host_port
from exporter.jobindex import JobIndexer
from exporter.joblogs import Plan, lookback_for
from exporter.jobsview import JobsView
from exporter.memory import LongLivedHeap
from exporter.metrics import series_guard
from exporter.poller import Account, JobLogPolling, Poller
from exporter.process import ProcessMetrics
from exporter.snapshot import JobLogSettings, Store
from exporter.web import PROBE_PATHS, WebApp
from exporter.webconfig import WebConfig, load_web_config

log = logging.getLogger(__name__)


def make_client(account: AccountConfig, settings: Settings, budget: ResponseBudget | None = None) -> IpsClient:
    verify: ssl.SSLContext | bool = True
    if account.insecure_skip_verify:
        log.warning("TLS certificates of IPS are NOT verified (insecure_skip_verify)", extra={"account": account.name})
        verify = False
    elif account.ca_file is not None:
        verify = ssl.create_default_context(cafile=str(account.ca_file))
    timeout = settings.poll.timeout
    return IpsClient(
        account.endpoint,
        account.user,
        account.resolve_password(single_account=len(settings.accounts) == 1),
        api_version=account.api_version,
        retry=RetryPolicy(deadline=timeout, attempt_timeout=max(timeout / 2, 1.0)),
        max_response_bytes=int(account.max_response_size),
        verify=verify,
        locale=account.locale,
        proxy=account.proxy(),
        budget=budget,
    )


class Exporter:
    """One exporter process: start(), reload() as often as asked, then stop()."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        web_config = web_config_of(settings)
        self.store = Store(max_age=settings.poll.effective_max_age, guard=series_guard(settings.poll.max_series),
                           job_logs=job_log_settings(settings))
        self.exposition = Exposition(
            self.store, interval=settings.poll.interval, job_log_interval=settings.job_logs.interval,
            process=ProcessMetrics(),
        )
        self.store.subscribe(LongLivedHeap().published)
        self.budget = ResponseBudget(int(settings.poll.max_total_response_size))
        self.accounts = make_accounts(settings, self.budget)
        self.poller = make_poller(settings, self.accounts, self.store)
        addresses = [split_listen_address(address) for address in settings.web.listen_addresses]
        self._was_ready = False  # readiness outlives a reload's new poller
        self.job_index = JobIndexer(lambda: self.store.state)
        jobs = JobsView(lambda: self.store.state, self.job_index,
                        next_poll=lambda target: self.poller.next_poll(target))
        app = WebApp(self.exposition, jobs, ready=self._ready, prefix=settings.web.prefix,
                     telemetry_path=settings.web.telemetry_path)
        self.server = HttpServer(app.handle, *addresses[0], also=addresses[1:])
        self._apply_web_config(settings, web_config)

    def _ready(self) -> bool:
        return self._was_ready or self.poller.first_poll_attempted.is_set()

    def _apply_web_config(self, settings: Settings, web_config: WebConfig | None) -> None:
        self.server.configure(
            ssl_context=web_config.ssl_context if web_config else None,
            basic_auth=web_config.basic_auth if web_config else None,
            auth_exempt_paths=frozenset(settings.web.prefix + path for path in PROBE_PATHS)
            if settings.web.probes_without_auth else frozenset(),
            headers=web_config.headers if web_config else (),
        )
        self.scheme = "https" if web_config and web_config.ssl_context else "http"

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        await self.server.start()
        self.poller.start()
        for host, port in self.server.addresses:
            log.info("serving %s://%s%s%s", self.scheme, host_port(host, port), self.settings.web.prefix,
                     self.settings.web.telemetry_path)

    async def reload(self, settings: Settings) -> None:
        """Apply a configuration read again: accounts, polling, the series guard, the web
        config. The companies of accounts that stay keep their state and series. Raises
        `ConfigError`, with nothing changed, if the new configuration cannot be used."""
        if not settings.accounts:
            raise ConfigError(["accounts: no IPS account configured"])
        web_config = web_config_of(settings)
        accounts = make_accounts(settings, self.budget)  # reads the password files: may refuse
        for key in ("listen_address", "route_prefix", "telemetry_path"):
            if getattr(settings.web, key) != getattr(self.settings.web, key):
                log.warning("web.%s changed to %s: it takes effect at the next restart", key,
                            getattr(settings.web, key))
                settings = settings.model_copy(update={"web": settings.web.model_copy(
                    update={key: getattr(self.settings.web, key)})})
        self._was_ready = self._ready()
        await self.poller.stop()
        await close_clients(self.accounts)
        self.store.reconfigure({a.name for a in settings.accounts}, max_age=settings.poll.effective_max_age,
                               guard=series_guard(settings.poll.max_series), job_logs=job_log_settings(settings))
        self.exposition.interval = settings.poll.interval
        self.exposition.job_log_interval = settings.job_logs.interval
        self.budget.limit = int(settings.poll.max_total_response_size)
        self._apply_web_config(settings, web_config)
        self.settings, self.accounts = settings, accounts
        self.poller = make_poller(settings, accounts, self.store)
        self.poller.start()
        log.info("configuration reloaded: %d accounts", len(accounts))

    async def stop(self) -> None:
        await self.poller.stop()
        await self.server.close()
        await self.job_index.close()
        await close_clients(self.accounts)


def web_config_of(settings: Settings) -> WebConfig | None:
    return load_web_config(settings.web.config_file) if settings.web.config_file else None


def make_accounts(settings: Settings, budget: ResponseBudget) -> list[Account]:
    """One client per account, all reading answers within `budget`; `ConfigError`, before any
    client opens, if a password is unreadable."""
    for account in settings.accounts:
        account.resolve_password(single_account=len(settings.accounts) == 1)
    return [Account(a.name, make_client(a, settings, budget), tuple(a.companies), password_reader(a))
            for a in settings.accounts]


def password_reader(account: AccountConfig) -> Callable[[], str | None] | None:
    """Reads the account's password file again (a rotated Docker or Kubernetes secret): None
    while it cannot be read, as when the secret is being swapped."""
    if account.password_file is None:
        return None

    def read() -> str | None:
        try:
            return account.resolve_password(single_account=False)
        except ConfigError:
            return None

    return read


def job_log_plan(settings: Settings) -> Plan:
    section = settings.job_logs
    return Plan(lookback=lookback_for(section.interval, settings.poll.interval), recent_window=section.recent_window)


def job_log_settings(settings: Settings) -> JobLogSettings:
    section = settings.job_logs
    return JobLogSettings(job_log_plan(settings), section.recent_max, section.enabled)


def job_log_polling(settings: Settings) -> JobLogPolling | None:
    """None when `job_logs.enabled` is false. A job-log poll (all its calls) is cancelled after
    half its interval, and never sooner than one active poll's timeout."""
    section = settings.job_logs
    if not section.enabled:
        return None
    return JobLogPolling(section.interval, max(settings.poll.timeout, section.interval / 2), job_log_plan(settings))


def make_poller(settings: Settings, accounts: list[Account], store: Store) -> Poller:
    return Poller(
        accounts,
        store,
        interval=settings.poll.interval,
        timeout=settings.poll.timeout,
        shard=parse_shard(settings.shard) if settings.shard else None,
        discovery_interval=settings.poll.discovery_interval,
        auth_backoff_max=settings.poll.auth_backoff_max,
        job_logs=job_log_polling(settings),
    )


async def close_clients(accounts: list[Account]) -> None:
    for account in accounts:
        await account.client.aclose()
