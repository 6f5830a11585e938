"""scene7-exporter: Prometheus metrics for the job progress of Adobe Scene7 IPS accounts."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("scene7-exporter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

APP_NAME = "scene7-exporter"
DEFAULT_PORT = 10373
