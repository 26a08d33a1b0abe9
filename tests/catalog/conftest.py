"""The catalog tests share the stored-points fixture."""

from tests.catalog.points import store  # noqa: F401  (the fixture)
