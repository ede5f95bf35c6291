"""Training-side helpers (data, quality metrics, sandbox) kept out of the installed library.

They depend on benchmark files and a code sandbox that a user of the router never needs, so they
live next to the package instead of inside it.
"""
