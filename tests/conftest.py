"""Shared fixtures: a free local port for multi-process tests and a tiny LVIS made by the
pipeline's own generator (the smoke data), so tests need no hand-written fake datasets."""
import socket

import pytest

from pipeline.data.synthetic import smoke_settings, synthesize


@pytest.fixture
def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture(scope='session')
def tiny_lvis(tmp_path_factory):
    """The smoke scale's synthetic LVIS (v1 and v0.5 layout, 16 classes, 300 train / 60 val
    images of 128 px), generated once per session: its root."""
    root = tmp_path_factory.mktemp('tiny_lvis') / 'data'
    synthesize(root, seed=0, **smoke_settings())
    return root
