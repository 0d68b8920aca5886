"""Tools' outputs: never over an input, never half a file (a kill or a full disk keeps the previous one)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sparse_detr.utils.files import (
    NoSpaceLeftError,
    OverwritesInputError,
    atomic_output,
    atomic_write,
    refuse_overwriting_inputs,
)

ROOT = Path(__file__).resolve().parents[2]
SLOW_WRITER = """
import sys, time
from sparse_detr.utils.files import atomic_write

def write(f):
    for _ in range(1000):
        f.write(b"new" * 100000)
        f.flush()
        print("writing", flush=True)
        time.sleep(0.05)

atomic_write(sys.argv[1], write)
"""


def test_a_kill_mid_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "model_final.pth"
    target.write_bytes(b"old and complete")
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(target)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    for _ in range(3):  # a few MB written under the temporary name
        assert process.stdout.readline().strip() == "writing"
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGTERM
    assert target.read_bytes() == b"old and complete"


def test_a_full_disk_names_the_folder_and_keeps_the_previous_file(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("previous")
    (tmp_path / f".result.json.tmp{os.getpid()}").symlink_to("/dev/full")  # always full
    with pytest.raises(NoSpaceLeftError, match=rf"no space left in {tmp_path} while writing result\.json"):
        atomic_write(target, b"{}" * 100000)
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_a_real_full_file_system(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        (mount / "figure.png").write_bytes(b"previous")
        with (
            pytest.raises(NoSpaceLeftError, match=f"no space left in {mount}"),
            atomic_output(mount / "figure.png") as tmp,
        ):
            tmp.write_bytes(b"x" * 1_000_000)  # a writer that wants a path
        assert (mount / "figure.png").read_bytes() == b"previous"
        assert [p.name for p in mount.iterdir()] == ["figure.png"]
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_an_output_that_is_an_input_is_refused_by_name(tmp_path):
    weights = tmp_path / "model_final.pth"
    weights.write_bytes(b"weights")
    (tmp_path / "link.pth").symlink_to(weights)
    os.link(weights, tmp_path / "hard.pth")
    outputs = (weights, tmp_path / "link.pth", tmp_path / "hard.pth", tmp_path / "sub" / ".." / weights.name)
    for output in outputs:
        with pytest.raises(OverwritesInputError, match=rf"--output {output} is the file --weights reads"):
            refuse_overwriting_inputs({"--output": output}, {"--weights": weights})
    refuse_overwriting_inputs({"--output": tmp_path / "model.onnx"}, {"--weights": weights, "--config": None})
    refuse_overwriting_inputs({"--output": weights}, {"--weights": "sparse_detr://official/x"})
    assert weights.read_bytes() == b"weights"


def test_a_temporary_file_keeps_the_suffix_for_writers_that_read_it(tmp_path):
    with atomic_output(tmp_path / "a.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"png")
    assert (tmp_path / "a.png").read_bytes() == b"png" and not tmp.exists()
