"""Registration of xlstmkit's models with transformers' Auto classes, done when transformers loads those classes.

`import xlstmkit` calls `install()`. Registering at once would mean importing transformers and its model base class
(`transformers.modeling_utils`, which pulls in most of transformers): seconds, more than `import xlstmkit` itself
costs, paid by every user of xlstmkit whether or not they touch transformers. Instead `install()` puts a small finder
on `sys.meta_path` that waits for transformers' two Auto modules and registers right after each has been executed:

    transformers.models.auto.configuration_auto   ->  AutoConfig.register("xlstmkit", xLSTMKitConfig)
    transformers.models.auto.modeling_auto        ->  AutoModelForCausalLM.register(xLSTMKitConfig, <model class>)

The config class needs only `transformers.configuration_utils`, already loaded by then (configuration_auto imports
it): milliseconds. The model class needs `modeling_utils`, which `modeling_auto` does not import (and which
`AutoTokenizer` users never need: `AutoTokenizer` loads `modeling_auto` too). So unless `modeling_utils` is loaded
already, the mapping first gets a stand-in, a class with the model's `from_pretrained` / `from_config` that imports
`xlstmkit.interop.transformers` when first called, puts the real `xLSTMKitForCausalLM` in its place and hands the
call over. A module that is already loaded when `install()` runs is registered at once. Nothing here imports
transformers, and nothing happens if it is not installed.

The finder is the standard post-import-hook technique (as in `wrapt.register_post_import_hook`), in the standard
library's terms: it asks the other finders for the module's spec and wraps that loader's `exec_module`, so the module
itself is loaded exactly as it would be without xlstmkit.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
import warnings
from collections.abc import Callable

CONFIG_AUTO = "transformers.models.auto.configuration_auto"
MODELING_AUTO = "transformers.models.auto.modeling_auto"


def _register_config(module) -> None:
    from .hf_config import MODEL_TYPE, xLSTMKitConfig

    module.AutoConfig.register(MODEL_TYPE, xLSTMKitConfig, exist_ok=True)


def _register_model(module) -> None:
    from .hf_config import xLSTMKitConfig

    auto = module.AutoModelForCausalLM
    if all(_loaded(m) for m in ("transformers.modeling_utils", "transformers.generation.utils")):
        from .transformers import xLSTMKitForCausalLM

        auto.register(xLSTMKitConfig, xLSTMKitForCausalLM, exist_ok=True)
    else:
        auto.register(xLSTMKitConfig, _stand_in(auto, xLSTMKitConfig), exist_ok=True)


def _loaded(name: str) -> bool:
    module = sys.modules.get(name)
    return module is not None and not _initializing(module)


def _stand_in(auto, config_class) -> type:
    """A class standing for `xLSTMKitForCausalLM` in `auto`'s mapping until first used (see the module docstring)."""

    def real() -> type:
        from .transformers import xLSTMKitForCausalLM

        auto.register(config_class, xLSTMKitForCausalLM, exist_ok=True)  # replaces the stand-in
        return xLSTMKitForCausalLM

    class xLSTMKitForCausalLM:  # noqa: N801 - the name the real class has
        """Stand-in for `xlstmkit.interop.transformers.xLSTMKitForCausalLM` (imported on first use)."""

        @classmethod
        def from_pretrained(cls, *args, **kwargs):
            return real().from_pretrained(*args, **kwargs)

        @classmethod
        def from_config(cls, *args, **kwargs):
            return real()._from_config(*args, **kwargs)

        @classmethod
        def _from_config(cls, *args, **kwargs):
            return real()._from_config(*args, **kwargs)

        @classmethod
        def register_for_auto_class(cls, *args, **kwargs):
            return real().register_for_auto_class(*args, **kwargs)

    xLSTMKitForCausalLM.config_class = config_class
    return xLSTMKitForCausalLM


HOOKS: dict[str, Callable] = {CONFIG_AUTO: _register_config, MODELING_AUTO: _register_model}


def _run(name: str, module) -> None:
    """A failed registration must not break the import of transformers: one warning, and that Auto class simply
    does not know xlstmkit (the folder's remote-code files still load it with trust_remote_code=True)."""
    try:
        HOOKS[name](module)
    except Exception as exc:  # noqa: BLE001 - e.g. a transformers version without the API we use
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        warnings.warn(f"xlstmkit could not register its models with transformers ({type(exc).__name__}: {first}); "
                      f"AutoModelForCausalLM will not know model_type 'xlstmkit'", RuntimeWarning, stacklevel=2)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for a watched module name it returns the spec the other finders give, with the
    loader's `exec_module` wrapped to call the hook after the module has been executed."""

    def __init__(self, names: set[str]) -> None:
        self.pending = set(names)
        self._busy = threading.local()

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.pending or getattr(self._busy, "name", None) == fullname:
            return None
        self._busy.name = fullname  # the other finders may consult sys.meta_path again: do not recurse
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._busy.name = None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_register(module, _exec=exec_module, _name=fullname):
            _exec(module)
            self.pending.discard(_name)
            if not self.pending and self in sys.meta_path:
                sys.meta_path.remove(self)
            _run(_name, module)

        loader.exec_module = exec_then_register  # this loader instance belongs to this one module's spec
        return spec


_installed: _AfterImport | None = None


def install() -> None:
    """Register now with the Auto modules transformers has already loaded; wait for the others (idempotent)."""
    global _installed
    if _installed is not None:
        return
    waiting = set()
    for name in (CONFIG_AUTO, MODELING_AUTO):  # config first: the model registration needs the config registered
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__spec__", None) is not None and not _initializing(module):
            _run(name, module)
        else:
            waiting.add(name)
    _installed = _AfterImport(waiting)
    if waiting:
        sys.meta_path.insert(0, _installed)


def _initializing(module) -> bool:
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def uninstall() -> None:
    """Stop waiting (for tests); registrations already made stay."""
    global _installed
    if _installed is not None and _installed in sys.meta_path:
        sys.meta_path.remove(_installed)
    _installed = None


__all__ = ["install", "uninstall", "CONFIG_AUTO", "MODELING_AUTO"]
