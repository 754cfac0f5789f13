"""Importing the engine, I/O and the other torch-free parts of vemrestore does not import torch."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "modules",
    [
        "vemrestore",
        "vemrestore.engine, vemrestore.io",
        "vemrestore.methods",
        "vemrestore.degrade",
        "vemrestore.metrics",
    ],
)
def test_import_does_not_load_torch(modules):
    code = f"import {modules}, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_lazy_method_names_still_resolve():
    code = (
        "import sys, vemrestore.methods as m; "
        "assert 'torch' not in sys.modules; "
        "from vemrestore.methods import load_config, load_config_options, load_method; "
        "from vemrestore.methods import save_config; "
        "from vemrestore.methods._persist import load_method as direct; "
        "assert load_method is direct and m.save_config is save_config; "
        "assert set(m.__all__) <= set(dir(m))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
