"""The sandbox's processes on one machine: the ports it picks, and what it says when one of its components died."""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from pathlib import Path

import pytest

from canary_checks.config import load_config
from canary_checks.errors import SandboxError
from canary_checks.sandbox import Sandbox, processes
from canary_checks.sandbox.files import extra_ports, write_files
from canary_checks.sandbox.processes import EPHEMERAL_RANGE, free_port_settings, free_ports, port_free
from tests.conftest import write_config


class LowestPort:
    """A draw that always says the lowest port: every caller draws the same one."""

    def randrange(self, low: int, high: int) -> int:
        return low


def test_a_port_drawn_is_claimed_so_no_other_process_draws_it_until_the_claim_is_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = next(p for p in range(20000, 30000) if port_free(p))
    monkeypatch.setattr(processes, "PORT_CLAIMS", tmp_path / "claims")
    monkeypatch.setattr(processes, "LOWEST_PORT", port)
    monkeypatch.setattr(processes.random, "SystemRandom", LowestPort)
    assert free_ports(1) == [port] and (tmp_path / "claims" / str(port)).exists()
    assert port not in free_ports(1)  # another process's call a moment later: not the same port (the kernel's pick)
    old = time.time() - processes.CLAIM_SECONDS - 1
    os.utime(tmp_path / "claims" / str(port), (old, old))
    assert free_ports(1) == [port]  # a claim past its time is taken over


def test_free_ports_are_bindable_distinct_and_below_the_range_outgoing_connections_take() -> None:
    low = int(EPHEMERAL_RANGE.read_text().split()[0])
    ports = free_ports(40, taken=range(10000, 20000))
    assert len(set(ports)) == 40 and ports == sorted(ports)
    assert all(20000 <= p < low for p in ports)  # never one the kernel may give an outgoing connection meanwhile
    assert all(port_free(p) for p in ports)


def test_no_request_data_names_the_component_that_died_and_the_last_line_of_its_log(tmp_path: Path) -> None:
    settings = free_port_settings(tmp_path / "state")
    config = load_config(write_config(tmp_path / "canary.yaml", service="auth", namespace="orion",
                                      kubernetes={"enabled": False}, sandbox=settings))  # fmt: skip
    box = Sandbox(config)
    write_files(config, box.state_dir, 0, {}, free_ports(extra_ports(config)))  # what 'sandbox up' writes first
    with socket.socket() as taken:  # what another program did between the port's pick and the node agent's start
        taken.bind(("127.0.0.1", settings["node_port"]))
        taken.listen()
        command = [sys.executable, "-m", "canary_checks.sandbox.node", "--state-dir", str(box.state_dir), "--port",
                   str(settings["node_port"])]  # fmt: skip
        box.processes.start("node", command, os.environ, box.processes.load_state())
        deadline = time.monotonic() + 30
        while box.running()["node"]:
            assert time.monotonic() < deadline, "the node agent kept running on a taken port"
            time.sleep(0.1)
        asked = time.monotonic()
        with pytest.raises(SandboxError) as refused:
            box.wait_for_data(timeout=60)
        assert time.monotonic() - asked < 30  # at once: a dead node agent brings no data, however long it waits
    said = str(refused.value)
    dead = "node is not running (node.log: OSError: [Errno 98] Address already in use)"
    assert re.search(rf"has no request data after \d+s: {re.escape(dead)}", said), said
    assert str(box.state_dir) in said and "sandbox down" in said
