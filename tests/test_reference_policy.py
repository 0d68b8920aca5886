"""The official-parity tests skip without their fixture locally, and fail without it in CI."""

from __future__ import annotations

import conftest
import pytest


def test_missing_reference_skips_locally_and_fails_in_ci(monkeypatch, tmp_path):
    monkeypatch.setattr(conftest, "REFERENCE_FILE", tmp_path / "absent.pt")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="absent.pt"):
        conftest.require_reference()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI runs the official-parity tests"):
        conftest.require_reference()


def test_present_reference_neither_skips_nor_fails(monkeypatch, tmp_path):
    present = tmp_path / "fixture.pt"
    present.write_bytes(b"")
    monkeypatch.setattr(conftest, "REFERENCE_FILE", present)
    monkeypatch.setenv("CI", "true")
    conftest.require_reference()
