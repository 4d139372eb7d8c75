"""Every module imports alone, the core stays free of I/O, the root stays light.

Each check runs in a fresh interpreter: in this one, other tests have
imported everything already, so ``sys.modules`` would prove nothing.
"""

from __future__ import annotations

import json
import pickle
import pkgutil
import subprocess
import sys
import types

import pytest

import aiopop

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(aiopop.__path__, "aiopop.")
    if info.name != "aiopop.__main__"  # runs the command line when imported
)

CORE = [
    "aiopop._apop",
    "aiopop._auth",
    "aiopop._events",
    "aiopop._md5",
    "aiopop._parse",
    "aiopop._protocol",
    "aiopop._state",
    "aiopop._errors",
    "aiopop._types",
    "aiopop.sasl",
]
"""The sans-I/O core: parsing and protocol state, which never touch a socket or a file."""

IO_MODULES = ["aiofiles", "asyncio", "socket", "sqlite3", "ssl", "selectors"]

FEATURES = [
    "aiopop._accounts",
    "aiopop._daemon",
    "aiopop._delivery_state",
    "aiopop._fetch",
    "aiopop._fetch_callable",
    "aiopop._fetch_choose",
    "aiopop._many",
    "aiopop._message",
    "aiopop._programs",
    "aiopop._targets",
    "aiopop._stores",
    "aiopop._watch",
]


def loaded_after(statement: str) -> set[str]:
    """The module names ``sys.modules`` holds after running ``statement`` in a fresh interpreter."""
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_the_module_list_is_complete() -> None:
    assert "aiopop._protocol" in MODULES
    assert "aiopop.testing" in MODULES
    assert set(CORE) <= set(MODULES)
    assert set(FEATURES) <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone(module: str) -> None:
    assert module in loaded_after(f"import {module}")


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_no_io(module: str) -> None:
    loaded = loaded_after(f"import {module}")
    assert module in loaded
    assert not loaded & set(IO_MODULES)


def test_the_root_loads_no_feature_until_used() -> None:
    loaded = loaded_after("import aiopop")
    assert not loaded & set(FEATURES)
    assert not loaded & {"sqlite3", "aiofiles", "ssl", "asyncio"}
    # A feature loads on first use, and only what it needs.
    loaded = loaded_after("import aiopop\naiopop.check_many")
    assert "aiopop._many" in loaded
    assert "aiopop._fetch" not in loaded
    assert "sqlite3" not in loaded


def test_every_public_name_resolves_from_the_root() -> None:
    code = (
        "import aiopop\n"
        "missing = [name for name in aiopop.__all__ if getattr(aiopop, name, None) is None]\n"
        "assert not missing, missing"
    )
    loaded_after(code)


def test_the_public_names_are_those_the_root_can_load() -> None:
    assert sorted(aiopop.__all__) == sorted(aiopop._SOURCES)
    assert set(dir(aiopop)) >= set(aiopop.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = aiopop.nothing


@pytest.mark.parametrize("name", aiopop.__all__)
def test_each_public_class_and_function_shows_its_public_name(name: str) -> None:
    value = getattr(aiopop, name)
    if isinstance(value, type | types.FunctionType):
        assert value.__module__ == "aiopop"
        assert pickle.loads(pickle.dumps(value)) is value  # found again by its public name
    else:  # a constant, a type alias or the sasl namespace: at least there, and itself
        assert value is not None
        assert getattr(aiopop, name) is value


OLD_MODULES = [
    "accounts",
    "client",
    "errors",
    "fetch",
    "many",
    "maildir",
    "state",
    "stores",
    "types",
]


@pytest.mark.parametrize("old", OLD_MODULES)
def test_the_old_public_modules_still_work_and_warn(old: str) -> None:
    module = __import__(f"aiopop.{old}", fromlist=["_"])
    public = {name for name, source in aiopop._SOURCES.items() if source != "sasl"}
    defined_there = [
        name
        for name in public
        if aiopop._SOURCES[name] == f"_{old}" or (old == "state" and name.startswith("State"))
    ]
    assert defined_there
    for name in defined_there:
        with pytest.warns(DeprecationWarning, match=f"import {name} from aiopop"):
            assert getattr(module, name) is getattr(aiopop, name)
    with pytest.raises(AttributeError):
        _ = module.nothing_here


def test_the_public_classes_type_hints_resolve_under_their_public_name() -> None:
    # typing.get_type_hints() evaluates string annotations in the namespace
    # __module__ names; saying "aiopop" there must not break pydantic & co.
    code = (
        "import typing, aiopop\n"
        "classes = [getattr(aiopop, n) for n in aiopop.__all__]\n"
        "classes = [c for c in classes if isinstance(c, type)]\n"
        "assert len(classes) > 40\n"
        "for cls in classes:\n"
        "    assert cls.__module__ == 'aiopop', cls\n"
        "    typing.get_type_hints(cls)\n"
        "hints = typing.get_type_hints(aiopop.Account)\n"
        "assert hints['tls'] == aiopop.TLSPolicy, hints['tls']\n"
        "assert typing.get_type_hints(aiopop.CheckResult)['account'] is aiopop.Account\n"
    )
    loaded_after(code)
