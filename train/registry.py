"""Networks by name: `register_model`, `create_model(name, spec)`, `list_models()`.

A name is a registered network's class name, matched case-insensitively (`finalcnnet`), or
`package.module:ClassName` for a user's own torch module whose constructor takes the
`ImageSpec`. Checkpoints record the name, so a saved model is rebuilt by the same call.

This module imports torch only when a network is built: `fcls-train --help` stays cheap.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from fcls.infer.common.errors import ConfigError
from fcls.infer.common.spec import ImageSpec

if TYPE_CHECKING:
    from torch import nn

DEFAULT_ARCH = "FinalCNNet"  # the notebook's final model: what fcls-train trains by default
# where the built-in networks live; importing them registers them (notebook order)
_BUILTIN_MODULES = ("fcls.train.networks", "fcls.train.model")

_REGISTRY: dict[str, type] = {}  # lower-case name -> class, in registration order
T = TypeVar("T", bound=type)


class UnknownModelError(ConfigError):
    """A network name that is neither registered nor an importable `module:Class`."""


def register_model(cls: T) -> T:
    """Class decorator: make `cls` buildable by its class name (case-insensitively)."""
    key = cls.__name__.lower()
    known = _REGISTRY.get(key)
    if known is not None and known is not cls:
        # two classes under one name would make a checkpoint's architecture ambiguous
        raise ValueError(f"a network named {known.__name__} is already registered")
    _REGISTRY[key] = cls
    return cls


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def list_models() -> list[str]:
    """The registered networks' names, in registration order (the notebook's)."""
    _load_builtins()
    return [cls.__name__ for cls in _REGISTRY.values()]


def is_user_network(name: str) -> bool:
    """Whether `name` is a user's `module:Class` rather than a registered name."""
    return ":" in name


def model_class(name: str) -> type[nn.Module]:
    """The class `name` builds; UnknownModelError (one line) when there is none."""
    if is_user_network(name):
        return _user_class(name)
    _load_builtins()
    cls = _REGISTRY.get(name.strip().lower())
    if cls is None:
        raise UnknownModelError(
            f"unknown network {name!r}: known networks are {', '.join(list_models())}, "
            "or give your own as package.module:ClassName"
        )
    return cls


def canonical_name(name: str) -> str:
    """The name a checkpoint records: the registered spelling, or `module:Class` as given."""
    return name.strip() if is_user_network(name) else model_class(name).__name__


def _user_class(name: str) -> type[nn.Module]:
    """Import `package.module:ClassName` and check that it is a torch module class."""
    from torch import nn

    module_name, _, class_name = name.strip().partition(":")
    if not module_name or not class_name:
        raise UnknownModelError(f"network {name!r}: expected package.module:ClassName")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # a user's module may fail in any way while importing
        raise UnknownModelError(
            f"network {name!r}: cannot import {module_name} ({type(e).__name__}: {e})"
        ) from None
    cls: Any = getattr(module, class_name, None)
    if cls is None:
        raise UnknownModelError(f"network {name!r}: {module_name} has no {class_name}")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise UnknownModelError(
            f"network {name!r}: {class_name} is a {type(cls).__name__}, "
            "not a torch.nn.Module subclass"
        )
    return cls


def create_model(name: str, spec: ImageSpec) -> nn.Module:
    """A new network `name` (train mode, fresh weights) for images and classes of `spec`.

    Raises UnknownModelError for an unknown name, GeometryError (a ConfigError) when the
    network cannot take the spec's image size, ConfigError when a user's class fails."""
    cls = model_class(name)
    if not is_user_network(name):
        return cls(spec)
    try:
        return cls(spec)
    except ConfigError:
        raise
    except Exception as e:  # the user's constructor: report it in one line, as ours do
        raise ConfigError(
            f"network {name!r} could not be built for {spec.size} images ({type(e).__name__}: {e})"
        ) from None


@dataclass(frozen=True)
class ModelInfo:
    """What `fcls-train --arch list` shows of a network at one geometry."""

    name: str
    parameters: int
    multiply_adds: int  # per image, in a forward pass


def model_info(name: str, spec: ImageSpec) -> ModelInfo:
    """Parameter count and multiply-adds per image of network `name` built for `spec`."""
    from .tracing import count_multiply_adds

    model = create_model(name, spec)
    params = sum(p.numel() for p in model.parameters())
    counter = getattr(model, "multiply_adds", None)
    macs = counter() if callable(counter) else count_multiply_adds(model, spec)
    return ModelInfo(canonical_name(name), params, int(macs))


__all__ = [
    "DEFAULT_ARCH",
    "ModelInfo",
    "UnknownModelError",
    "canonical_name",
    "create_model",
    "list_models",
    "model_class",
    "model_info",
    "register_model",
]
