"""Built-in plugins: ordinary modules of ``@cronhub.hookimpl`` functions, one per concern."""
