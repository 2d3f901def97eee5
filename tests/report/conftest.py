"""Real run directories for the report tests: two small ExactPolicy runs (seeds 0 and 1) under one sweep."""

import pytest

EXACT = ("+experiment=exact", "dataset.num_questions=3", "budget.num_initial=200")


@pytest.fixture(scope="session")
def exact_sweep(tmp_path_factory):
    """A sweep directory holding runs seed=0 and seed=1 (each about 10 s), reports included."""
    from jaxalign.run import execute
    from tests.test_run import composed

    root = tmp_path_factory.mktemp("sweep")
    for seed in (0, 1):
        execute(composed(*EXACT, f"seed={seed}"), root / f"seed={seed}")
    return root


@pytest.fixture(scope="session")
def exact_run(exact_sweep):
    return exact_sweep / "seed=0"
