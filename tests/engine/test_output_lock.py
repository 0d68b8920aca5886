"""One writer per train.output_dir: the second run is refused naming the holder, dead holders' locks are
taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from detectron2.engine import default_argument_parser

from sparse_detr.engine.output_lock import LOCK_FILE_NAME, OutputDirectoryLock, OutputDirectoryLockedError

ROOT = Path(__file__).resolve().parents[2]

_HOLD = """
import sys, time
from sparse_detr.engine.output_lock import OutputDirectoryLock
lock = OutputDirectoryLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def held_by_another_process(tmp_path):
    """``(directory, process)``: a live process holding ``tmp_path / "out"``."""
    directory = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", _HOLD, str(directory)], stdout=subprocess.PIPE,
                               text=True, env=env)
    assert process.stdout.readline().strip() == "held"
    yield directory, process
    process.kill()
    process.wait()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_writer_is_refused_naming_the_holder(held_by_another_process):
    directory, process = held_by_another_process
    message = rf"{directory} is in use by process {process.pid} on host {socket.gethostname()}"
    with pytest.raises(OutputDirectoryLockedError, match=message):
        OutputDirectoryLock(directory).acquire()
    # the holder is killed (no clean exit): its lock goes with it, the next run takes the directory
    process.send_signal(signal.SIGKILL)
    process.wait()
    with OutputDirectoryLock(directory) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (directory / LOCK_FILE_NAME).exists()  # released on exit


def test_two_locks_in_one_process_exclude_each_other(tmp_path):
    refused = pytest.raises(OutputDirectoryLockedError, match=f"process {os.getpid()}")
    with OutputDirectoryLock(tmp_path), refused:
        OutputDirectoryLock(tmp_path).acquire()


def test_a_stale_lock_file_of_a_dead_holder_is_taken_over(tmp_path):
    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "started": "earlier", "command": "train"}
    (tmp_path / LOCK_FILE_NAME).write_text(json.dumps(stale))
    with OutputDirectoryLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_train_net_refuses_a_second_run_before_writing_anything(held_by_another_process):
    import train_net

    directory, process = held_by_another_process
    args = default_argument_parser().parse_args(
        ["--config-file", str(ROOT / "tests/configs/tiny_shapes.py"), f"train.output_dir={directory}",
         "train.device=cpu"])
    with pytest.raises(OutputDirectoryLockedError, match=f"process {process.pid}"):
        train_net.main(args)
    assert sorted(p.name for p in directory.iterdir()) == [LOCK_FILE_NAME]  # no config.yaml, log, metrics
