"""The command as a user runs it: `demo` scraped over HTTP, `run` stopped by SIGTERM mid-poll."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from servers import simulator
from support import (
    exporter_command,
    free_port,
    http_ok,
    parse_samples,
    port_open,
    running,
    wait_until,
    write_self_signed_certificate,
)

from exporter.cli import main


def test_demo_serves_lively_metrics_that_promtool_accepts(tmp_path):
    port = free_port()
    args = exporter_command("demo", f"--web.listen-address=127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with running("demo", args, tmp_path, lambda: http_ok(base + "/healthz")) as demo:
        up = 'scene7_up{company="Acme Retail"} 1.0'
        text = wait_until(lambda: (r := httpx.get(base + "/metrics", timeout=5)).status_code == 200
                          and "scene7_task_items{" in r.text and up in r.text and r.text, 20, "per-job metrics")
        assert time.monotonic() - started < 20
        check = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
        assert check.returncode == 0, check.stderr.decode()
        assert httpx.get(base + "/readyz", timeout=5).status_code == 200
        assert f"metrics at http://127.0.0.1:{port}/metrics" in demo.log()


def test_sigterm_mid_poll_exits_quickly_without_traceback(tmp_path):
    with simulator(tmp_path) as (_, url):
        base = url.rsplit("/scene7/", 1)[0]
        # Every answer takes 30 s: a poll is always under way.
        httpx.post(base + "/simulator/faults", json={"kind": "latency", "latency": 30}, timeout=5).raise_for_status()
        port = free_port()
        config = tmp_path / "config.yml"
        config.write_text(json.dumps({
            "accounts": [{"name": "sig", "endpoint": url, "user": "demo@example.com"}],
            "poll": {"interval": "60s", "timeout": "50s"},
            "web": {"listen_address": f"127.0.0.1:{port}"},
        }))
        args = exporter_command("run", f"--config.file={config}")
        with running("exporter", args, tmp_path, lambda: http_ok(f"http://127.0.0.1:{port}/healthz"),
                     env={"SCENE7_EXPORTER_PASSWORD": "demo"}) as exporter:
            # The first poll starts after up to 5 s of jitter: wait until IPS holds it.
            wait_until(lambda: httpx.get(base + "/simulator/faults", timeout=5).json()["injected"] >= 1,
                       15, "the first poll to reach IPS")
            assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 503
            stopped = time.monotonic()
            exporter.proc.send_signal(signal.SIGTERM)
            code = exporter.proc.wait(10)
            elapsed = time.monotonic() - stopped
            output = exporter.log()
    assert code == 0, output
    assert elapsed < 5, elapsed
    assert "Traceback" not in output and "level=error" not in output, output
    assert "demo" not in output.replace("demo@example.com", "")


def test_sighup_reloads_the_configuration_and_a_bad_one_is_refused(tmp_path):
    with simulator(tmp_path, jobs=10) as (_, url):
        port = free_port()
        config = tmp_path / "config.yml"

        def write(**account: object) -> None:
            config.write_text(json.dumps({
                "accounts": [{"name": "hup", "endpoint": url, "user": "demo@example.com", **account}],
                "poll": {"interval": "1s", "timeout": "0.8s"},
                "web": {"listen_address": f"127.0.0.1:{port}"},
            }))

        def up() -> dict[str, float]:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            return {dict(labels)["company"]: v for (name, labels), v in parse_samples(text).items()
                    if name == "scene7_up"}

        write()
        args = exporter_command("run", f"--config.file={config}")
        with running("exporter", args, tmp_path, lambda: http_ok(f"http://127.0.0.1:{port}/healthz"),
                     env={"SCENE7_EXPORTER_PASSWORD": "demo"}) as exporter:
            companies = wait_until(lambda: len(ups := up()) == 3 and all(ups.values()) and sorted(ups), 20,
                                   "three companies up")
            write(companies=[companies[0]])
            exporter.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: up() == {companies[0]: 1.0}, 20, "the reloaded configuration")
            assert "configuration reloaded" in exporter.log()

            config.write_text("accounts: {this is: [not a list\n")
            exporter.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: "configuration not reloaded, the running one is kept" in exporter.log(), 20,
                       "the refusal")
            exporter.proc.send_signal(signal.SIGUSR1)
            wait_until(lambda: "SIGUSR1 received and ignored" in exporter.log(), 20, "SIGUSR1 logged")
            assert exporter.proc.poll() is None and up() == {companies[0]: 1.0}
            exporter.proc.send_signal(signal.SIGTERM)
            assert exporter.proc.wait(10) == 0
            output = exporter.log()
    assert "Traceback" not in output and "demo" not in output.replace("demo@example.com", "")


def test_a_config_file_that_is_not_yaml_is_refused_with_its_position_and_no_content(tmp_path, capsys):
    config = tmp_path / "config.yml"
    config.write_text("accounts: [{user: a@example.com, password: s3cret-Pa55 ]\n  - bad: {\n")
    assert main(["run", f"--config.file={config}"]) == 2
    err = capsys.readouterr().err
    assert f"{config}: not valid YAML (expected ',' or '}}', but got ']', line 1, column 56)" in err, err
    assert "s3cret" not in err and "Traceback" not in err


def finished(args: list[str], tmp_path: Path, timeout: float = 10.0) -> tuple[int, list[str], float, int]:
    """Run the command to its end: exit code, stderr lines, seconds taken and peak RSS in bytes.

    The child's address space is capped at 2 GiB, so a regression fails the test with a
    MemoryError rather than take the machine's memory.
    """
    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    errors = tmp_path / "stderr.txt"
    started = time.monotonic()
    with errors.open("wb") as sink:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=sink,
                                preexec_fn=cap_memory)
    while not (waited := os.wait4(proc.pid, os.WNOHANG))[0]:
        if time.monotonic() - started > timeout:
            proc.kill()
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise AssertionError(f"still running after {timeout:g}s: {errors.read_text()}")
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(waited[1])
    return proc.returncode, errors.read_text().splitlines(), elapsed, waited[2].ru_maxrss * 1024


def test_a_config_file_that_is_not_yaml_exits_2_with_one_line(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text("accounts: [{user: a@example.com, password: s3cret-Pa55 ]\n  - bad: {\n")
    code, lines, _, _ = finished(exporter_command("run", f"--config.file={config}"), tmp_path)
    assert (code, lines) == (2, [f"scene7-exporter: invalid configuration: {config}: not valid YAML "
                                 "(expected ',' or '}', but got ']', line 1, column 56)"])


def test_every_problem_is_one_line_of_its_own(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text("poll: {interval: 1h, timeout: 0}\nlog: {level: loud}\n")
    code, lines, _, _ = finished(exporter_command("run", f"--config.file={config}"), tmp_path)
    assert (code, lines) == (2, [
        "scene7-exporter: invalid configuration: poll.timeout: a duration must be positive (got 0)",
        "scene7-exporter: invalid configuration: log.level: Input should be 'debug', 'info', 'warn', 'warning' or "
        "'error' (got 'loud')",
    ])


@pytest.mark.parametrize(
    ("listen", "reason"),
    [
        ("127.0.0.1:{port}", "address already in use"),
        (":{port}", "address already in use"),  # every interface: IPv6 and IPv4, then IPv4 alone
        ("192.0.2.1:{port}", "cannot assign requested address"),  # TEST-NET-1: no interface has it
        ("no-such-host.invalid:{port}", None),  # the resolver's reason varies with the resolver
    ],
    ids=["in-use", "in-use-every-interface", "not-this-host", "unresolvable"],
)
def test_an_address_that_cannot_be_listened_on_exits_1_with_one_line(tmp_path, listen, reason):
    if listen.startswith("192.0.2.1") and binds("192.0.2.1"):
        pytest.skip("this host binds any address (net.ipv4.ip_nonlocal_bind)")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = listen.format(port=taken.getsockname()[1])
        config = tmp_path / "config.yml"
        config.write_text(json.dumps({
            "accounts": [{"name": "busy", "endpoint": "http://127.0.0.1:1/ips", "user": "u@example.com",
                          "password": "x"}],
            "web": {"listen_address": address},
        }))
        code, lines, elapsed, _ = finished(exporter_command("run", f"--config.file={config}"), tmp_path)
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"scene7-exporter: cannot listen on {address}: "), lines
    assert reason is None or lines[0].endswith(f": {reason}"), lines
    assert elapsed < 10, elapsed


def binds(host: str) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, 0))
        except OSError:
            return False
        return True


def test_demo_on_a_port_in_use_exits_1_with_the_address(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        code, lines, _, _ = finished(exporter_command("demo", f"--web.listen-address={address}"), tmp_path)
    assert code == 1, lines
    assert lines[-1] == f"scene7-exporter: cannot listen on {address}: address already in use", lines
    assert not any("Traceback" in line for line in lines), lines


def write_big_config(path: Path) -> None:
    with path.open("w") as file:
        file.write("accounts: [{user: u@example.com, password: x}]\n")
        line = "#" + "x" * 1022 + "\n"
        file.writelines(line for _ in range(100 * 1024))  # 100 MiB of comment


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("password_file", "accounts[zero].password_file: /dev/zero is larger than 4 KiB; "
                          "it should hold only the password"),
        ("config_file", "{config}: larger than 1 MiB, far more than any configuration; check --config.file"),
        ("web_config_file", "web config file /dev/zero: larger than 1 MiB, far more than any web configuration; "
                            "check --web.config.file"),
    ],
    ids=["password-file-dev-zero", "config-file-100-mib", "web-config-file-dev-zero"],
)
def test_a_huge_or_endless_file_is_refused_at_once_with_one_line(tmp_path, case, problem):
    config = tmp_path / "config.yml"
    account = {"name": "zero", "endpoint": "http://127.0.0.1:1/ips", "user": "u@example.com", "password": "x"}
    args = ["run", f"--config.file={config}", "--web.listen-address=127.0.0.1:0"]
    if case == "password_file":
        del account["password"]
        account["password_file"] = "/dev/zero"
    if case == "web_config_file":
        args.append("--web.config.file=/dev/zero")
    config.write_text(json.dumps({"accounts": [account]}))
    if case == "config_file":
        write_big_config(config)
    code, lines, elapsed, peak_rss = finished(exporter_command(*args), tmp_path)
    assert (code, lines) == (2, ["scene7-exporter: invalid configuration: " + problem.format(config=config)])
    assert elapsed < 10, elapsed
    assert peak_rss < 200 << 20, peak_rss


JOB_LOG_FAMILIES = ("scene7_jobs_finished_total", "scene7_job_files_total", "scene7_job_duration_seconds",
                    "scene7_last_job_end_timestamp_seconds", "scene7_recent_job_info", "scene7_recent_job_files",
                    "scene7_recent_job_end_timestamp_seconds", "scene7_recent_job_duration_seconds",
                    "scene7_job_log_polls_total",
                    "scene7_job_log_poll_errors_total", "scene7_job_logs_last_successful_poll_timestamp_seconds")


def test_demo_shows_finished_jobs_of_every_outcome_within_two_minutes(tmp_path, capsys):
    port = free_port()
    args = exporter_command("demo", f"--web.listen-address=127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with running("demo", args, tmp_path, lambda: http_ok(base + "/healthz")):

        def every_outcome() -> str | None:
            text = httpx.get(base + "/metrics", timeout=5).text
            outcomes: dict[str, float] = {}
            for (name, labels), value in parse_samples(text).items():
                if name == "scene7_jobs_finished_total":
                    outcome = dict(labels)["outcome"]
                    outcomes[outcome] = outcomes.get(outcome, 0.0) + value
            return text if len(outcomes) == 4 and all(outcomes.values()) else None

        text = wait_until(every_outcome, 120, "finished jobs of every outcome")
        took = time.monotonic() - started
        assert took < 120
        check = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
        assert check.returncode == 0, check.stderr.decode()
        samples = parse_samples(text)
        names = {name for name, _ in samples}
        assert {"scene7_recent_job_info", "scene7_job_duration_seconds_bucket",
                "scene7_job_logs_last_successful_poll_timestamp_seconds"} <= names
        assert all(v == 0 for (name, _), v in samples.items() if name == "scene7_job_log_poll_errors_total")
        (tmp_path / "demo.prom").write_text(text)
        with capsys.disabled():
            lines = [line for line in text.splitlines() if line.split("{")[0].split(" ")[0].startswith(
                tuple(f for f in JOB_LOG_FAMILIES)) and 'company="Acme Retail"' in line]
            print(f"\ndemo: every outcome after {took:.0f} s; excerpt:")
            for line in lines:
                if "recent_job" not in line or lines.index(line) % 40 == 0:
                    print(line)


@pytest.mark.parametrize("argv", [[], ["run"], ["demo"], ["simulate"], ["check-config"], ["healthcheck"]])
def test_version_on_every_subcommand_names_python_and_the_key_libraries(argv, capsys):
    import platform
    from importlib import metadata

    from exporter import __version__
    from exporter.cli import KEY_DEPENDENCIES

    with pytest.raises(SystemExit) as exited:
        main([*argv, "--version"])
    assert exited.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"scene7-exporter, version {__version__}"
    python = [platform.python_version(), f"({platform.python_implementation()})"]
    assert lines[1].split() == ["python", "version:", *python]
    assert lines[2].split()[0] == "platform:"
    found = {line.split()[0].rstrip(":"): line.split()[1] for line in lines[3:]}
    assert found == {name: metadata.version(name) for name in KEY_DEPENDENCIES}


def test_a_repeated_listen_address_serves_on_each_and_one_taken_stops_all(tmp_path):
    """`--web.listen-address` repeated, as exporter-toolkit allows (e.g. IPv4 and a management
    interface): every address serves the same routes; one that cannot be bound stops the start
    with its address named, and none is left listening."""
    first, second = free_port(), free_port()
    config = tmp_path / "config.yml"
    with simulator(tmp_path) as (_, url):
        config.write_text(json.dumps({
            "accounts": [{"name": "two", "endpoint": url, "user": "demo@example.com", "password": "demo"}],
            "poll": {"interval": "1s", "timeout": "0.8s"},
        }))
        args = exporter_command("run", f"--config.file={config}", f"--web.listen-address=127.0.0.1:{first}",
                                f"--web.listen-address=[::1]:{second}" if binds("::1") else
                                f"--web.listen-address=127.0.0.2:{second}")
        host = "[::1]" if binds("::1") else "127.0.0.2"
        with running("exporter", args, tmp_path, lambda: http_ok(f"http://127.0.0.1:{first}/healthz")) as exporter:
            for base in (f"http://127.0.0.1:{first}", f"http://{host}:{second}"):
                text = wait_until(lambda base=base: (r := httpx.get(base + "/metrics", timeout=5)).status_code == 200
                                  and "scene7_up{" in r.text and r.text, 20, f"metrics on {base}")
                assert 'company="' in text
            log = exporter.log()
            assert f"listening on 127.0.0.1:{first} (http)" in log and f"listening on {host}:{second} (http)" in log

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        free = free_port()
        code, lines, _, _ = finished(exporter_command(
            "run", f"--config.file={config}", f"--web.listen-address=127.0.0.1:{free}",
            f"--web.listen-address=127.0.0.1:{busy}"), tmp_path)
        assert code == 1, lines
        assert lines == [f"scene7-exporter: cannot listen on 127.0.0.1:{busy}: address already in use"], lines
        with socket.socket() as again:  # the first address was let go
            again.bind(("127.0.0.1", free))


def test_listen_addresses_from_the_flags_and_the_config_file(tmp_path):
    from exporter.cli import _demo_settings, _overrides, parse_args
    from exporter.config import WebSection, load_settings

    config = tmp_path / "config.yml"
    config.write_text("accounts:\n  - {name: a, endpoint: 'https://ips.example.com/x', user: u, password: p}\n"
                      "web:\n  listen_address: [':10373', '10.0.0.5:9000']\n")
    assert load_settings(config).web.listen_addresses == [":10373", "10.0.0.5:9000"]
    run = parse_args(["--config.file", str(config), "--web.listen-address=:1", "--web.listen-address=[::1]:2"])
    assert load_settings(run.config_file, **_overrides(run)).web.listen_addresses == [":1", "[::1]:2"]
    one = parse_args(["--config.file", str(config), "--web.listen-address=:3"])
    assert load_settings(one.config_file, **_overrides(one)).web.listen_address == ":3"
    assert _demo_settings(parse_args(["demo"])).web.listen_addresses == [":10373"]
    for bad in ([], [":1", ":1"], [":1", "nowhere"]):
        with pytest.raises(ValueError, match="listen_address"):
            WebSection(listen_address=bad)


def healthcheck(*flags: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(exporter_command("healthcheck", *flags), capture_output=True, text=True, timeout=30,
                          cwd=cwd, env={**os.environ, **(env or {})})


def test_healthcheck_asks_the_exporter_as_run_serves_it_with_tls_and_basic_auth(tmp_path):
    import bcrypt

    cert, key = write_self_signed_certificate(tmp_path, "scene7-exporter healthcheck")
    hashed = bcrypt.hashpw(b"scrape", bcrypt.gensalt(4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
                   f"basic_auth_users:\n  prometheus: {hashed}\n")
    port = free_port()
    config = tmp_path / "config.yml"
    with simulator(tmp_path) as (_, url):
        config.write_text(json.dumps({
            "accounts": [{"name": "hc", "endpoint": url, "user": "demo@example.com", "password": "demo"}],
            "web": {"listen_address": f":{port}", "config_file": str(web), "route_prefix": "/scene7"},
        }))
        assert healthcheck(f"--config.file={config}", cwd=tmp_path).returncode == 1  # not started yet
        args = exporter_command("run", f"--config.file={config}")
        with running("exporter", args, tmp_path, lambda: port_open(port)):
            ok = healthcheck(f"--config.file={config}", cwd=tmp_path,
                             env={"HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"})
            assert ok.returncode == 0, ok.stderr
            assert ok.stdout.strip() == f"scene7-exporter healthcheck: https://127.0.0.1:{port}/scene7/healthz: 200"
            # the flags of run, over the file: another prefix is another path
            moved = healthcheck(f"--config.file={config}", "--web.route-prefix=/other", cwd=tmp_path)
            assert moved.returncode == 1 and "/other/healthz: answered 401" in moved.stderr, moved.stderr
            # probes behind basic auth: the 401 proves the exporter serves
            guarded = tmp_path / "guarded.yml"
            guarded.write_text(
                config.read_text().replace('"route_prefix"', '"probes_without_auth": false, "route_prefix"'))
            assert '"probes_without_auth": false' in guarded.read_text()
            assert healthcheck(f"--config.file={guarded}", cwd=tmp_path).returncode == 0
            # another server on that port, with another certificate: not this exporter
            (tmp_path / "other").mkdir()
            other_cert, other_key = write_self_signed_certificate(tmp_path / "other", "someone else")
            other = tmp_path / "other.yml"
            other.write_text(f"tls_server_config:\n  cert_file: {other_cert}\n  key_file: {other_key}\n")
            stranger = healthcheck(f"--config.file={config}", f"--web.config.file={other}", cwd=tmp_path)
            assert stranger.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in stranger.stderr, stranger.stderr
    gone = healthcheck(f"--config.file={config}", cwd=tmp_path)
    assert gone.returncode == 1 and len(gone.stderr.strip().splitlines()) == 1, gone.stderr
    # no configuration file (the image's demo): the default address
    default = healthcheck("--config.file=/nonexistent.yml", cwd=tmp_path)
    assert default.returncode in (0, 1) and "http://127.0.0.1:10373/healthz" in default.stdout + default.stderr
    # run's other flags are accepted; a flag it does not know is exit 1, never Docker's reserved 2
    same = healthcheck(f"--config.file={config}", "--log.level=warn", "--log.format=json", "--shard=1/2",
                       "--web.telemetry-path=/m", cwd=tmp_path)
    assert same.returncode == 1 and "usage" not in same.stderr, same.stderr
    assert healthcheck("--no-such-flag", cwd=tmp_path).returncode == 1
