"""What the tests share besides fixtures (those stay in tests/conftest.py): the repository
copy and Kiln's commands run in it, params, tiny data and models, and the servers some
tests start."""
