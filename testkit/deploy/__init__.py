"""The deployed test host (testkit.testhost) as tests/deploy and `make chaos` use it."""
