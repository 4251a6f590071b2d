"""Where the tests' files are, for test modules at any depth."""
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"  # made by the authors' code (and the scripts that made them)
