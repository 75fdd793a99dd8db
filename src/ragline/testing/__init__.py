"""Test suites ragline ships for code outside it: ``store_contract.StoreContract`` is the behaviour
every ``ragline.store.base.Store`` backend must show (see that module for how a backend binds it).
These modules need pytest."""

import pytest

# plain asserts in a shipped module report their operands only when pytest rewrites them, and
# it rewrites a module only when told before the module is imported
pytest.register_assert_rewrite("ragline.testing.store_contract", "ragline.testing.store_access",
                               "ragline.testing.store_helpers")
