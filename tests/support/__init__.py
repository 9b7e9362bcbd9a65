"""Plain helpers the tests import (`from support.projects import make_shop_copy`).

No fixtures here: the shared fixtures are in tests/conftest.py. Nothing in this package imports
Prefect at import time except `support.prefect_api`, so conftest.py can import
`support.projects` and `support.postgres` without touching Prefect's settings. tests/ is on
sys.path through `pythonpath` in pyproject.toml's [tool.pytest.ini_options].
"""
