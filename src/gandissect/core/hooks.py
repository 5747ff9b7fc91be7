"""Layer instrumentation: retain or edit the output of named submodules of any `torch.nn.Module`.

    with Trace(generator, ["layer3", "blocks.2.conv"], edit={"layer3": ablate}) as trace:
        image = generator(z)
        features = trace["layer3"]

Layers are named as in `model.named_modules()` (dotted paths into nested modules). On exit every hook
is removed, also when the forward pass raised. `stop=True` ends the forward pass as soon as every
retained layer has been seen, which saves the rest of the network when only features are needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from gandissect.core.errors import GandissectError

EditFn = Callable[[torch.Tensor], torch.Tensor]


class UnknownLayerError(GandissectError, KeyError):
    """A layer name that the model does not have; the message lists the ones it has."""

    def __str__(self) -> str:
        return str(self.args[0])


class StopForward(Exception):
    """Raised inside a hook to end a forward pass early; caught by `Trace`."""


def layer_names(model: nn.Module) -> list[str]:
    """Every named submodule of `model`, in registration order."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if not name or name not in modules:
        names = layer_names(model)
        shown = ", ".join(names[:60]) + (f", ... ({len(names)} in all)" if len(names) > 60 else "")
        raise UnknownLayerError(f"{type(model).__name__} has no layer {name!r}; its layers are: {shown}")
    return modules[name]


class Trace(AbstractContextManager):
    """Retain and/or edit the outputs of named layers while the context is open."""

    def __init__(self, model: nn.Module, retain: Iterable[str] = (), edit: Mapping[str, EditFn] | None = None,
                 detach: bool = True, stop: bool = False) -> None:
        self.model = model
        self.retain_layers = list(dict.fromkeys(retain))
        self.edits = dict(edit or {})
        self.detach = detach
        self.stop = stop
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        layers = list(dict.fromkeys([*self.retain_layers, *self.edits]))
        self._modules = {name: get_layer(model, name) for name in layers}

    def __enter__(self) -> Trace:
        for name, module in self._modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        self.close()
        return exc_type is StopForward

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str) -> Callable[[nn.Module, Any, Any], Any]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"layer {name!r} returned {type(output).__name__}; only tensor outputs can be traced")
            if name in self.edits:
                output = self.edits[name](output)
            if name in self.retain_layers:
                self.outputs[name] = output.detach() if self.detach else output
                if self.stop and len(self.outputs) == len(self.retain_layers):
                    raise StopForward
            return output

        return hook

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.outputs:
            raise KeyError(f"layer {name!r} was not retained or has not run; retained: {sorted(self.outputs)}")
        return self.outputs[name]


def layer_shapes(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Output shape (without the batch dimension) of every submodule that returns a tensor."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(module: nn.Module, inputs: Any, output: Any, name: str = name) -> None:
            if isinstance(output, torch.Tensor) and name not in shapes:
                shapes[name] = tuple(output.shape[1:])

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return shapes
