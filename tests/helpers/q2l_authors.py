"""The Query2Label training fixtures (made by their code) and the script that made them, as a module."""
import importlib.util

from paths import FIXTURES

Q2L_FIXTURES = FIXTURES / "q2l_authors"
_spec = importlib.util.spec_from_file_location("make_q2l_fixtures", Q2L_FIXTURES / "make_fixtures.py")
make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make)
