"""`.ci/uv_install.py`: pip's configured sources reach uv unchanged (the set-up of `make`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "uv_install.py"


def load_script():
    spec = importlib.util.spec_from_file_location("uv_install", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pip_options(**values):
    """pip install options as pip parses them with no configuration, `values` changed."""
    defaults = {
        "index_url": "https://pypi.org/simple",
        "extra_index_urls": [],
        "find_links": [],
        "constraints": [],
        "cert": None,
        "no_index": False,
        "trusted_hosts": [],
    }
    return SimpleNamespace(**{**defaults, **values})


def test_uv_arguments_carry_every_pip_source_and_constraint():
    # Prepare
    uv_install = load_script()
    options = pip_options(
        extra_index_urls=["file:///opt/a/simple", "file:///opt/b/simple"],
        find_links=["/opt/wheels"],
        constraints=["/etc/c.txt"],
        trusted_hosts=["mirror.local"],
    )
    # Execute
    args = uv_install.uv_arguments(options)
    # Assert
    assert args == [
        "--index-strategy",
        "unsafe-best-match",
        "--index-url",
        "https://pypi.org/simple",
        "--extra-index-url",
        "file:///opt/a/simple",
        "--extra-index-url",
        "file:///opt/b/simple",
        "--find-links",
        "/opt/wheels",
        "--constraint",
        "/etc/c.txt",
        "--allow-insecure-host",
        "mirror.local",
    ]


def test_uv_arguments_with_pip_no_index_drop_the_index_url():
    # Prepare
    uv_install = load_script()
    options = pip_options(no_index=True, find_links=["/opt/wheels"])
    # Execute
    args = uv_install.uv_arguments(options)
    # Assert
    assert args == [
        "--index-strategy",
        "unsafe-best-match",
        "--no-index",
        "--find-links",
        "/opt/wheels",
    ]


def test_uv_environment_takes_pip_cert_and_a_cache_in_the_venv():
    # Prepare
    uv_install = load_script()
    options = pip_options(cert="/etc/ssl/ca.crt")
    # Execute
    env = uv_install.uv_environment(options, {"PATH": "/bin"}, Path("/w/.venv"))
    # Assert
    assert env == {
        "PATH": "/bin",
        "SSL_CERT_FILE": "/etc/ssl/ca.crt",
        "UV_CACHE_DIR": "/w/.venv/.uv-cache",
    }


def test_uv_environment_keeps_values_already_set():
    # Prepare
    uv_install = load_script()
    options = pip_options(cert="/etc/ssl/ca.crt")
    environ = {"SSL_CERT_FILE": "/mine.crt", "UV_CACHE_DIR": "/cache"}
    # Execute
    env = uv_install.uv_environment(options, environ, Path("/w/.venv"))
    # Assert
    assert env == environ


def test_pip_install_options_read_pip_variables(monkeypatch):
    # Prepare: a PIP_* variable, as CI machines configure pip
    uv_install = load_script()
    monkeypatch.setenv("PIP_FIND_LINKS", "/somewhere/wheels")
    # Execute
    options = uv_install.pip_install_options()
    # Assert
    assert options.find_links == ["/somewhere/wheels"]
