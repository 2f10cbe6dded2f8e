"""The ``cronhub`` command line: global options, plugin commands, one-line errors.

``make_cli(pm)`` builds the Typer app from a plugin manager (every command, built-in or not,
arrives through ``cronhub_cli``); ``main()`` pre-parses the plugin options, builds the
manager, and turns :class:`~cronhub.errors.CronhubError` into ``error: ...`` and exit 2.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import typer

from cronhub.errors import CronhubError, PluginLoadError, UsageError

if TYPE_CHECKING:
    from cronhub.hub import Hub
    from cronhub.plugins import CronhubPluginManager

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass
class CliState:
    """What the global options say; commands get their hub from here."""

    pm: CronhubPluginManager
    storage: str | None = None
    app: str | None = None
    debug: bool = False
    _hub: Hub | None = field(default=None, repr=False)

    def hub(self) -> Hub:
        """The hub of ``--app``, or one built from the settings and ``--storage``."""
        if self._hub is None:
            self._hub = load_app(self.app) if self.app else None
            if self._hub is None:
                from cronhub.hub import Hub

                self._hub = Hub(storage=self.storage, plugin_manager=self.pm)
            else:
                self._hub.use_plugin_manager(self.pm)
                if self.storage:
                    self._hub._storage_url = self.storage
        return self._hub


def load_app(spec: str) -> Hub:
    """Import ``module:attr`` and return the :class:`~cronhub.hub.Hub` it names."""
    from cronhub.hub import Hub

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"--app {spec!r}: expected module:attribute, e.g. myapp.tasks:hub")
    sys.path.insert(0, os.getcwd()) if os.getcwd() not in sys.path else None
    try:
        module = importlib.import_module(module_name)
    except CronhubError:
        raise
    except Exception as exc:
        raise UsageError(f"--app {spec!r}: cannot import {module_name}: {exc}") from exc
    try:
        hub = getattr(module, attr)
    except AttributeError:
        raise UsageError(f"--app {spec!r}: module {module_name} has no attribute {attr}") from None
    if not isinstance(hub, Hub):
        raise UsageError(f"--app {spec!r}: {attr} is a {type(hub).__name__}, not a cronhub.Hub")
    hub.source = f"--app {spec}"
    return hub


def state(ctx: typer.Context) -> CliState:
    """The :class:`CliState` of the running command."""
    root = ctx.find_root()
    obj = root.obj
    assert isinstance(obj, CliState)
    return obj


def echo_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout."""
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def make_cli(pm: CronhubPluginManager) -> typer.Typer:
    """Build the ``cronhub`` Typer app: global options, then every ``cronhub_cli`` hook."""
    app = typer.Typer(
        name="cronhub",
        help="Run scheduled jobs: cron expressions, intervals and one-offs, from plugins.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def main_options(
        ctx: typer.Context,
        storage: str | None = typer.Option(
            None, "--storage", help="Storage URL (default: CRONHUB_STORAGE or settings)."
        ),
        app_spec: str | None = typer.Option(
            None, "--app", help="A cronhub.Hub defined in an application, as module:attr."
        ),
        disable_plugin: list[str] | None = typer.Option(  # noqa: B008 - typer's style
            None, "--disable-plugin", help="Disable a plugin (entry point or distribution)."
        ),
        strict_plugins: bool = typer.Option(
            False, "--strict-plugins", help="Fail when a plugin cannot be loaded."
        ),
        debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
    ) -> None:
        # --disable-plugin and --strict-plugins were applied by main() before plugins loaded.
        ctx.obj = CliState(pm=pm, storage=storage, app=app_spec, debug=debug)

    owners: dict[str, str] = {}
    impls = list(reversed(pm.hook.cronhub_cli.get_hookimpls()))
    # Built-in commands first, then plugins in registration order: a clash names the plugin.
    impls.sort(key=lambda impl: not (info := pm.infos.get(impl.plugin_name)) or not info.builtin)
    for impl in impls:
        before = _command_names(app)
        try:
            impl.function(*[{"app": app}[arg] for arg in impl.argnames])
        except Exception as exc:
            from cronhub.errors import HookError

            raise HookError("cronhub_cli", impl.plugin_name, exc) from exc
        added = _command_names(app)
        for name in set(before) & set(added):
            if added.count(name) > before.count(name):
                raise UsageError(
                    f"command {name!r} of {pm.describe_plugin(impl.plugin_name)} is already "
                    f"defined by {pm.describe_plugin(owners.get(name))}"
                )
        for name in added:
            owners.setdefault(name, impl.plugin_name)
    return app


def _command_names(app: typer.Typer) -> list[str]:
    names = []
    for command in app.registered_commands:
        name = command.name or (command.callback.__name__ if command.callback else "")
        names.append(name.replace("_", "-"))
    for group in app.registered_groups:
        names.append(group.name or (group.typer_instance.info.name if group.typer_instance else ""))
    return names


def _preparse(argv: Sequence[str]) -> tuple[list[str], bool, bool]:
    """Find ``--disable-plugin``, ``--strict-plugins`` and ``--debug`` before plugins load."""
    disabled: list[str] = []
    strict = debug = False
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--disable-plugin" and i + 1 < len(args):
            disabled.append(args[i + 1])
        elif arg.startswith("--disable-plugin="):
            disabled.append(arg.split("=", 1)[1])
        elif arg == "--strict-plugins":
            strict = True
        elif arg == "--debug":
            debug = True
    return disabled, strict, debug


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info and logging.getLogger("cronhub").isEnabledFor(logging.DEBUG):
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(debug: bool = False) -> None:
    """One line per message on stderr; ``CRONHUB_LOG_LEVEL`` or ``--debug`` adjust the level."""
    root = logging.getLogger()
    if any(getattr(h, "_cronhub", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter())
    handler._cronhub = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    level = "DEBUG" if debug else os.environ.get("CRONHUB_LOG_LEVEL", "INFO").upper()
    root.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cronhub`` executable; returns (and exits with) the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    disabled, strict, debug = _preparse(args)
    setup_logging(debug)
    try:
        from cronhub.config import load_settings
        from cronhub.plugins import get_plugin_manager

        settings = load_settings()
        pm = get_plugin_manager(
            disabled=[*settings.get("disable_plugins", []), *disabled],
            strict=strict or bool(settings.get("strict_plugins")),
        )
        command = typer.main.get_command(make_cli(pm))
        code = command.main(args, prog_name="cronhub", standalone_mode=False)
    except PluginLoadError as exc:
        _print_error(exc, debug)
        code = EXIT_USAGE
    except CronhubError as exc:
        _print_error(exc, debug)
        code = EXIT_USAGE
    except typer.Abort:
        typer.echo("aborted", err=True)
        code = EXIT_USAGE
    except typer.TyperException as exc:  # typer's (vendored click) usage errors
        message = exc.format_message()
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(message)
        else:
            typer.echo(f"error: {message}", err=True)
        code = exc.exit_code
    except typer.Exit as exc:
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    code = int(code or 0) if isinstance(code, int) else 0
    if argv is None:
        sys.exit(code)
    return code


def _print_error(exc: BaseException, debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    typer.echo(f"error: {exc}", err=True)
