"""Plugin manager: loading order, disabling, broken plugins, strict mode, hook errors."""

from __future__ import annotations

import logging

import pluggy
import pytest

import cronhub
from cronhub.errors import HookError, PluginLoadError, UsageError
from cronhub.plugins import BUILTIN_PLUGINS, get_plugin_manager

GOOD_PLUGIN = """
import cronhub

@cronhub.job(name="{name}.tick", every="1m")
def tick() -> None:
    pass
"""


def test_builtins_are_registered_by_name_in_order(plugin_manager):
    names = [name for name, _ in plugin_manager.list_name_plugin()]
    assert names[: len(BUILTIN_PLUGINS)] == [name for name, _ in BUILTIN_PLUGINS]
    infos = {info.name: info for info in plugin_manager.list_plugins()}
    assert infos["memory"].builtin is True
    assert infos["memory"].hooks == ["cronhub_storage"]
    assert infos["commands"].distribution == "cronhub"


def test_entry_points_load_and_plugins_are_listed(fake_distribution):
    fake_distribution(
        "acme-jobs", "1.2.3", {"acme": "acme_mod"}, {"acme_mod.py": GOOD_PLUGIN.format(name="acme")}
    )
    pm = get_plugin_manager()
    info = {i.name: i for i in pm.list_plugins()}["acme"]
    assert (info.distribution, info.version, info.module) == ("acme-jobs", "1.2.3", "acme_mod")
    assert info.builtin is False and info.error is None
    hub = cronhub.Hub(storage="memory://", plugin_manager=pm)
    assert hub.jobs["acme.tick"].plugin == "acme"


def test_installed_plugin_is_called_before_builtin(fake_distribution):
    fake_distribution(
        "odd-storage",
        entry_points={"odd": "odd_storage"},
        modules={
            "odd_storage.py": """
            import cronhub
            from cronhub.builtin.memory_storage import MemoryStorage

            class Marked(MemoryStorage):
                pass

            @cronhub.hookimpl
            def cronhub_storage(url):
                return Marked(url)
            """
        },
    )
    pm = get_plugin_manager()
    storage = pm.call_provider("cronhub_storage", url="memory://")
    assert type(storage).__name__ == "Marked"


def test_broken_plugin_among_good_ones_is_reported_and_others_load(fake_distribution, caplog):
    fake_distribution(
        "good-one", "1.0", {"good1": "good1"}, {"good1.py": GOOD_PLUGIN.format(name="g1")}
    )
    fake_distribution(
        "broken-jobs", "0.3", {"broken": "broken_mod"}, {"broken_mod.py": "import not_a_module_x\n"}
    )
    fake_distribution(
        "good-two", "1.0", {"good2": "good2"}, {"good2.py": GOOD_PLUGIN.format(name="g2")}
    )
    with caplog.at_level(logging.ERROR, logger="cronhub.plugins"):
        pm = get_plugin_manager()
    assert pm.has_plugin("good1") and pm.has_plugin("good2")
    assert not pm.has_plugin("broken")
    [error] = pm.load_errors
    message = str(error)
    assert message == (
        "plugin 'broken' (entry point broken = broken_mod, distribution broken-jobs 0.3) "
        "failed to load: ModuleNotFoundError: No module named 'not_a_module_x'"
    )
    assert "\n" not in message
    assert [r.getMessage() for r in caplog.records if "broken" in r.getMessage()] == [message]
    info = {i.name: i for i in pm.list_plugins()}["broken"]
    assert info.error == "ModuleNotFoundError: No module named 'not_a_module_x'"


def test_strict_plugins_makes_a_failure_fatal(fake_distribution):
    fake_distribution("broken-jobs", "0.3", {"broken": "broken_mod"}, {"broken_mod.py": "1/0\n"})
    with pytest.raises(PluginLoadError, match=r"broken-jobs 0\.3.*ZeroDivisionError"):
        get_plugin_manager(strict=True)


@pytest.mark.parametrize("blocked", ["acme", "acme-jobs", "acme_jobs"])
def test_disable_by_entry_point_or_distribution_name(fake_distribution, blocked):
    fake_distribution(
        "acme-jobs", "1.0", {"acme": "acme_mod"}, {"acme_mod.py": "raise SystemError"}
    )
    pm = get_plugin_manager(disabled=[blocked])
    assert not pm.has_plugin("acme")
    assert pm.load_errors == []
    assert {i.name: i for i in pm.list_plugins()}["acme"].disabled is True


def test_disable_by_environment_variable(fake_distribution, monkeypatch):
    fake_distribution(
        "acme-jobs", "1.0", {"acme": "acme_mod"}, {"acme_mod.py": "raise SystemError"}
    )
    monkeypatch.setenv("CRONHUB_DISABLE_PLUGINS", "memory, acme")
    pm = get_plugin_manager()
    assert not pm.has_plugin("acme") and not pm.has_plugin("memory")
    assert pm.load_errors == []


def test_essential_plugins_cannot_be_disabled():
    with pytest.raises(UsageError, match="plugin collect cannot be disabled"):
        get_plugin_manager(disabled=["collect"], entrypoints=False)


def test_unknown_disabled_name_warns_with_known_names(caplog):
    with caplog.at_level(logging.WARNING, logger="cronhub.plugins"):
        pm = get_plugin_manager(disabled=["nope"], entrypoints=False)
    [record] = [r for r in caplog.records if "nope" in r.getMessage()]
    assert "known plugins:" in record.getMessage() and "memory" in record.getMessage()
    assert "nope" not in {info.name for info in pm.list_plugins()}


def test_async_firstresult_implementation_is_rejected(plugin_manager):
    class AsyncStorage:
        @cronhub.hookimpl
        async def cronhub_storage(self, url):
            return None

    with pytest.raises(
        pluggy.PluginValidationError, match=r"'async-store'.*cronhub_storage.*plain def"
    ):
        plugin_manager.register(AsyncStorage(), name="async-store")
    assert not plugin_manager.has_plugin("async-store")


def test_misspelt_hook_is_reported_and_plugin_dropped(fake_distribution, caplog):
    fake_distribution(
        "typo-plugin",
        "2.0",
        {"typo": "typo_mod"},
        {
            "typo_mod.py": (
                "import cronhub\n@cronhub.hookimpl\ndef cronhub_alertt(alert):\n    pass\n"
            )
        },
    )
    with caplog.at_level(logging.WARNING, logger="cronhub.plugins"):
        pm = get_plugin_manager()
    assert not pm.has_plugin("typo")
    assert "typo-plugin 2.0" in caplog.text and "cronhub_alertt" in caplog.text
    with pytest.raises(UsageError, match="cronhub_alertt"):
        get_plugin_manager(strict=True)


def test_non_prefixed_attributes_are_ignored(plugin_manager):
    class Plugin:
        @cronhub.hookimpl
        def helper(self):  # not a cronhub_* name: not a hook implementation
            return 1

    plugin_manager.register(Plugin(), name="helpers")
    assert plugin_manager.get_hookcallers(plugin_manager.get_plugin("helpers")) == []


async def test_notification_hook_failure_is_named_and_others_still_run(plugin_manager, caplog):
    seen = []

    class Good:
        @cronhub.hookimpl
        def cronhub_alert(self, alert):
            seen.append(("good", alert))

    class Boom:
        @cronhub.hookimpl
        async def cronhub_alert(self, alert):
            raise RuntimeError("slack down")

    plugin_manager.register(Good(), name="good")
    plugin_manager.register(Boom(), name="boom")
    from cronhub.runs import Alert

    alert = Alert(kind="failure", job="billing.sync", message="the job started failing")
    with caplog.at_level(logging.ERROR, logger="cronhub.plugins"):
        errors = await plugin_manager.call_each("cronhub_alert", alert=alert)
    assert seen == [("good", alert)]
    [error] = errors
    assert isinstance(error, HookError)
    assert str(error) == "hook cronhub_alert failed in plugin 'boom': RuntimeError: slack down"
    assert "plugin 'boom'" in caplog.text


def test_provider_failure_names_the_plugin(plugin_manager):
    class Bad:
        @cronhub.hookimpl
        def cronhub_storage(self, url):
            raise ValueError("cannot parse")

    plugin_manager.register(Bad(), name="bad-store")
    with pytest.raises(HookError, match="cronhub_storage failed in plugin 'bad-store'"):
        plugin_manager.call_provider("cronhub_storage", url="x://")


def test_tracing_logs_hook_calls(caplog, monkeypatch):
    monkeypatch.setenv("CRONHUB_TRACE_PLUGINS", "1")
    pm = get_plugin_manager(entrypoints=False)
    with caplog.at_level(logging.INFO, logger="cronhub.plugins"):
        pm.hook.cronhub_storage(url="memory://")
    assert "hook cronhub_storage(url='memory://')" in caplog.text
    assert "hook cronhub_storage returned MemoryStorage('memory://')" in caplog.text


def test_importing_cronhub_loads_no_plugin(fake_distribution, tmp_path, run_cli):
    import subprocess
    import sys

    marker = tmp_path / "imported"
    root = fake_distribution(
        "loud-plugin",
        "1.0",
        {"loud": "loud_mod"},
        {"loud_mod.py": f"open({str(marker)!r}, 'w').close()\n"},
    )
    subprocess.run(
        [sys.executable, "-c", "import cronhub, cronhub.hub"],
        check=True,
        env={"PYTHONPATH": str(root)},
        timeout=60,
    )
    assert not marker.exists()
    subprocess.run(
        [sys.executable, "-c", "import cronhub.plugins as p; p.get_plugin_manager()"],
        check=True,
        env={"PYTHONPATH": str(root)},
        timeout=60,
    )
    assert marker.exists()


async def test_wrappers_are_left_out_of_helper_calls_and_calls_are_recorded(
    plugin_manager, register_plugin, hook_calls
):
    seen = []

    class Wrapping:
        @cronhub.hookimpl(wrapper=True)
        def cronhub_startup(self, hub):
            seen.append("wrapper")
            return (yield)

    class Plain:
        @cronhub.hookimpl
        def cronhub_startup(self, hub):
            seen.append("plain")

    register_plugin(Wrapping(), name="wrapping")
    register_plugin(Plain(), name="plain")
    errors = await plugin_manager.call_each("cronhub_startup", hub=None)
    assert errors == [] and seen == ["plain"]
    assert [call.hook for call in hook_calls.named("cronhub_startup")] == ["cronhub_startup"]


def test_listened_follows_registration_blocking_and_call_listeners(plugin_manager):
    # The per-run hooks ask listened() before each call; its answers are remembered until a
    # registration, an unregistration, a block or a call listener may change them.
    pm = plugin_manager
    assert not pm.listened("cronhub_run_finished")

    class Listener:
        @cronhub.hookimpl
        def cronhub_run_finished(self, run):
            return None

    pm.register(Listener(), name="listener")
    assert pm.listened("cronhub_run_finished")
    pm.unregister(name="listener")
    assert not pm.listened("cronhub_run_finished")
    pm.register(Listener(), name="blocked-later")
    assert pm.listened("cronhub_run_finished")
    pm.set_blocked("blocked-later")
    assert not pm.listened("cronhub_run_finished")
    undo = pm.add_call_listener(lambda name, kwargs: None)
    assert pm.listened("cronhub_run_finished")
    undo()
    assert not pm.listened("cronhub_run_finished")
