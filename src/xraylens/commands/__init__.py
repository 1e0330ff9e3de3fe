"""The ``xraylens`` subcommands, one module each (``explain``, ``profile``, ``demo``)."""
