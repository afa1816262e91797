"""A corpus of third-party-style warping models (issue 13): see :mod:`tests.corpus.models`."""
