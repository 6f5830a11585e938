"""Wires the parts into a running exporter: clients, poller, store, exposition, HTTP server.

IPS -> client -> parse -> snapshot (Store) -> exposition -> HTTP. `Exporter` is what `run` and
`demo` start, and what the tests start in-process.
"""

from __future__ import annotations

import logging
import ssl

from exporter.client import IpsClient, RetryPolicy
from exporter.config import AccountConfig, Settings, parse_shard, split_listen_address
from exporter.exposition import Exposition
from exporter.httpserver import HttpServer, host_port
from exporter.metrics import series_guard
from exporter.poller import Account, Poller
from exporter.snapshot import Store
from exporter.web import PROBE_PATHS, WebApp
from exporter.webconfig import load_web_config

log = logging.getLogger(__name__)


def make_client(account: AccountConfig, settings: Settings) -> IpsClient:
    verify: ssl.SSLContext | bool = True
    if account.insecure_skip_verify:
        log.warning("account %r: TLS certificates of IPS are NOT verified (insecure_skip_verify)", account.name)
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
    )


class Exporter:
    """One exporter process: start(), then stop()."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.accounts = [
            Account(a.name, make_client(a, settings), tuple(a.companies)) for a in settings.accounts
        ]
        self.store = Store(max_age=settings.poll.effective_max_age, guard=series_guard(settings.poll.max_series))
        self.exposition = Exposition(self.store, interval=settings.poll.interval)
        self.poller = Poller(
            self.accounts,
            self.store,
            interval=settings.poll.interval,
            timeout=settings.poll.timeout,
            shard=parse_shard(settings.shard) if settings.shard else None,
        )
        web_config = load_web_config(settings.web.config_file) if settings.web.config_file else None
        self.host, port = split_listen_address(settings.web.listen_address)
        app = WebApp(self.exposition, self.store, ready=self.poller.first_poll_attempted.is_set)
        self.server = HttpServer(
            app.handle,
            self.host,
            port,
            ssl_context=web_config.ssl_context if web_config else None,
            basic_auth=web_config.basic_auth if web_config else None,
            auth_exempt_paths=PROBE_PATHS if settings.web.probes_without_auth else frozenset(),
        )
        self.scheme = "https" if web_config and web_config.ssl_context else "http"

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        await self.server.start()
        self.poller.start()
        log.info("serving %s://%s/metrics", self.scheme, host_port(self.host, self.port))

    async def stop(self) -> None:
        await self.poller.stop()
        await self.server.close()
        for account in self.accounts:
            await account.client.aclose()
