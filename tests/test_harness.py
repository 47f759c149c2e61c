"""The test harness itself: `pytest -n 2` (the README's test command) keeps the groups that
tests/conftest.py gives (one trained champion per run, the `ray start` heads one after another).

pytest-xdist's loadgroup mode marks a grouped test by appending `@group` to its node id; pytest
9.2 builds node ids another way, and the groups were then silently ignored (every test spread
over both workers: pytest-dev/pytest-xdist#1386), hence `pytest<9.2` in the dev extra. This test
fails the day an upgrade breaks the groups again, instead of a Ray head timing out now and then.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

CONFTEST = '''
import pytest

@pytest.hookimpl(tryfirst=True)  # as tests/conftest.py adds its groups: in this hook, by fixture
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "shared" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("shared"))

@pytest.fixture(scope="session")
def shared():
    return object()
'''
TESTS = '''
import time

def test_grouped_{m}_0(shared): time.sleep(0.2)
def test_grouped_{m}_1(shared): time.sleep(0.2)
def test_free_{m}_0(): time.sleep(0.2)
def test_free_{m}_1(): time.sleep(0.2)
'''


def test_grouped_tests_run_in_one_worker_under_n_2(tmp_path: Path):
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --dist loadgroup\n")
    (tmp_path / "conftest.py").write_text(CONFTEST)
    for module in ("a", "b"):
        (tmp_path / f"test_{module}.py").write_text(TESTS.format(m=module))
    done = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-v", "-p", "no:cacheprovider"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ran = re.findall(r"\[(gw\d)\] \[\s*\d+%\] PASSED (\S+)", done.stdout)
    assert len(ran) == 8, done.stdout[-3000:]
    grouped = {worker for worker, test in ran if "test_grouped_" in test}
    assert len(grouped) == 1, f"the group was spread over {sorted(grouped)}:\n{done.stdout[-3000:]}"
    assert all(test.endswith("@shared") for _, test in ran if "test_grouped_" in test), ran
