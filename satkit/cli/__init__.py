"""The ``satkit`` command: typer + rich, one module per subcommand, each a thin wrapper."""
