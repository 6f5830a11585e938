"""The command as a user runs it: `demo` scraped over HTTP, `run` stopped by SIGTERM mid-poll."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import httpx
from servers import simulator
from support import exporter_command, free_port, http_ok, parse_samples, running, wait_until

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
    assert "Traceback" not in output and "ERROR" not in output, output
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
