"""The audit verdict never reports a pass that was not checked (pip-audit exits 0 regardless)."""
from bot4d.audit import judge


def test_all_skipped_is_not_a_pass():
    rep = {"dependencies": [{"name": "numpy", "skip_reason": "Dependency not found on PyPI"}]}
    code, text = judge(rep)
    assert code == 2 and text.startswith("NOT AUDITED")


def test_partial_names_unchecked_packages():
    rep = {"dependencies": [{"name": "numpy", "version": "2.4", "vulns": []},
                            {"name": "numba", "skip_reason": "not found"}]}
    code, text = judge(rep)
    assert code == 2 and "numba" in text and "PARTIAL" in text


def test_vulnerability_reported():
    rep = {"dependencies": [{"name": "requests", "version": "2.19.0",
                             "vulns": [{"id": "PYSEC-2018-28"}]}]}
    code, text = judge(rep)
    assert code == 1 and "PYSEC-2018-28" in text


def test_full_pass():
    rep = {"dependencies": [{"name": "numpy", "version": "2.4", "vulns": []}]}
    assert judge(rep)[0] == 0
