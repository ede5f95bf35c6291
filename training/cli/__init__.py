"""The command lines (top wing): each parses its flags (``flags`` makes them from a settings
dataclass), builds the run's objects with ``context.load_run_context`` and calls the wings' functions
with them. ``python training/ppo.py`` and the other documented scripts are thin files calling a
``cli()`` here (or, for the small tools, beside their one function)."""
