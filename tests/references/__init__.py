"""Independent NumPy references: the golden values of the JAX tests.

One module per divrl module, named after it: ``references/advantages.py``
mirrors ``divrl/advantages.py``, ``references/surrogates.py`` mirrors
``divrl/surrogates.py``, ``references/testing.py`` the exact expectations of
``divrl/testing.py``, and so on. The functions are written from the published
formulas, never from divrl's JAX code, in plain Python/NumPy with float64 and
explicit loops, favouring clarity over speed; a test imports the modules it
needs (``from tests.references import advantages as ref``). Helpers shared by
several modules live in ``_common.py``. ``libraries.py`` is the exception: it
emulates how verl, TRL and tunix compute the same quantities, for
``tests/test_conventions.py``. A module with a ``_self_test`` checks itself on
hand-computed values when run (``python -m tests.references.advantages``).
"""
