"""A simulated IPS server for tests, the demo and benchmarks.

`world` is the living world (jobs moving on an injectable clock), `responses` the SOAP layer,
`faults` the fault switch, `server` the HTTP binding at /scene7/services/IpsApiService.
"""

from exporter.simulator.faults import FaultKind, FaultPlan, Faults
from exporter.simulator.server import SOAP_PATH, Simulator, SimulatorServer
from exporter.simulator.world import SimulatorConfig, World

__all__ = [
    "SOAP_PATH",
    "FaultKind",
    "FaultPlan",
    "Faults",
    "Simulator",
    "SimulatorConfig",
    "SimulatorServer",
    "World",
]
