"""Helpers of the test suite, imported as ``tests.helpers.<module>`` (the repository root is on the test
path): tiny models and configs, the official configs' arguments, a float64 MSDA reference, export cases, and
the loader of the command-line scripts."""
