import pytest

from beam_test_helpers import load_stdlib_sources


@pytest.fixture
def stdlib_sources():
    return load_stdlib_sources()
