"""The command as a user runs it: `demo` scraped over HTTP, `run` stopped by SIGTERM mid-poll."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import httpx
from servers import simulator
from support import exporter_command, free_port, http_ok, running, wait_until


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
