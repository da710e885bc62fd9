import os

import pytest


@pytest.fixture
def tag(request):
    """A name unique to this test (files, process markers) that a leftover can be found by."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    return f"seekforge-{module}-{os.getpid()}-{request.node.name}".replace("[", "-").replace("]", "")
